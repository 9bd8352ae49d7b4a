"""alexnet_jax: the 2012 AlexNet paper, reproduced in JAX/Flax.

    import alexnet_jax
    run = alexnet_jax.load_workdir("runs/imagenette")   # a trained workdir, from anywhere
    print(run.predict(["cat.jpg"], views=10))           # each image's top 5
"""


def load_workdir(workdir, step=None):
    """The trained network of a workdir, ready to predict (alexnet_jax.prediction.predict)."""
    from alexnet_jax.prediction.predict import load_workdir as load  # noqa: PLC0415

    return load(workdir, step)
