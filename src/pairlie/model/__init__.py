"""The model as data: PairLIE's nets N, L and R, the loss terms, and checkpoints (pairlie's and the official weights).

May import `pairlie.io`, `pairlie.specs` and `pairlie.trust`; never the stages above
(inference, evaluation, training, deployment).
"""
