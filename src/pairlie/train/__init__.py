"""Training: the LightningModule, its callbacks, run folders and resuming, sweeps, HParams, the config resolvers.

May import every stage below it: io, data, model, infer and evaluate (validation scores with the
Enhancer and the paper's protocol).
"""
