"""Networks: the base ResMLP, the Koopman autoencoder (and ensembles of them), loss terms, training, checkpoints."""
