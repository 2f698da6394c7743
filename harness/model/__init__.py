"""The model definition: the shared decoder backbone, the attention mixers, building a registered
model at a parameter-matched config, its FLOP count, and the count-based reference models."""
