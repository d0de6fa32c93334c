"""Training stage: ANI (torchani) and HIP-NN (hippynn) ensembles trained on Dask from a
dataset version and registered as one model version; evaluation, verification checks and the
ASE calculator of a pulled version (docs/training.md, docs/verification.md)."""
