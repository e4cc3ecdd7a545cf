"""AI judges (pairwise with position-swap debiasing, listwise, rating, binary, steps, correction), reward-model
judges and the judge quality report. Nothing here imports torch at module level."""
