"""How a step runs: the context it is given and the process runner; beneath actions and platforms."""
