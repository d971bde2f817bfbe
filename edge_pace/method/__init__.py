"""PACE on the training side (torch): the learner (pace), its parts (lora, subspace, perturb, cka, projection),
the shared training pieces (training), the session loop (sessions), settings (config) and checkpoints
(checkpoint). Submodules are imported where used; this package imports nothing heavy."""
