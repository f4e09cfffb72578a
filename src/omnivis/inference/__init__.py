"""Using a trained bundle: one predictor and one evaluation per task.

Everything here imports torch, timm, the task's model and its metrics only, never Lightning or the
training code, so ``omnivis predict``, ``omnivis eval``, export and serve start fast.
"""
