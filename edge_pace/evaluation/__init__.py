"""Evaluation on the class-incremental protocol: the methods registry (baselines: frozen, pace_methods,
finetune on base), the bench and its report, metrics and the session protocol. This package imports nothing
heavy."""
