"""Training set, candidate model, evaluation and the gated promotion to champion."""
