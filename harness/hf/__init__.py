"""The transformers code that `harness export` copies into every exported folder (configuration and
modelling of the attention models); these modules import nothing from the harness."""
