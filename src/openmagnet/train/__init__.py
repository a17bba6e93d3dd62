"""Training MAGNeT (SPEC §4): configuration presets, span masking, optimisation, the solver and the
export of a trained model in audiocraft's checkpoint layout. Never imported by inference; importing
this package imports nothing but its own docstring."""
