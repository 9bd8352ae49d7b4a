"""alexnet_jax: the 2012 AlexNet paper, reproduced in JAX/Flax."""
