"""Benchmark data: listing datasets (loaders, published, clips) and building offline benchmarks (synth +
synth_render, real + real_audio). This package imports nothing heavy."""
