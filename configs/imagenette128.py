"""The paper's network and recipe on Imagenette at 128 pixels, for ablations on a CPU. Only the
resolution follows Mishkin, Sergievskiy & Matas (2017, "Systematic evaluation of CNN advances on
the ImageNet"), who found that 128-pixel inputs preserve the ranking of architecture choices
made at 224 for an order of magnitude less compute; they trained the whole of ImageNet-1k for
about 290k iterations, this trains 10 of its classes (Imagenette) for a few thousand steps.

Everything is configs/imagenette.py (the paper's network and recipe, biases 0.1) except the
image size, scaled by the paper's own 256 : 224 ratio: the shorter side resized to 146 and the
central 146 x 146 square kept, random 128 x 128 crops and their mirrors for training, the centre
crop and the paper's 10 views (corners, centre, mirrored) at 128 for evaluation.

What changes in the network: only the spatial sizes. conv1 (11 x 11, stride 4) gives 31 x 31
maps instead of 55 x 55, pool1 15 x 15, conv2 15 x 15, pool2 7 x 7, conv3-5 7 x 7, and pool5
3 x 3, so fc6 reads 3 x 3 x 256 = 2,304 inputs instead of 6 x 6 x 256 = 9,216 (its kernel
2,304 x 4,096 instead of 9,216 x 4,096: 32.7 M parameters in all instead of 61.0 M with 1,000
classes; 28.6 M here with 10). Every layer, width and switch is the paper's.

Run (offline, from a local copy of the ImageFolder tree):
    python -m alexnet_jax.main --config=configs/imagenette128.py --workdir=runs/imagenette128 \
        --config.data.path=../shared/data/imagenette2-224
"""

from configs import imagenette


def get_config():
    config = imagenette.get_config()
    with config.unlocked():
        config.data.resize_size = 146  # 128 * 256 / 224: the paper's 256 : 224 ratio
        config.data.prepared = "146"   # prepared once as 146 x 146 squares
        config.data.crop_size = 128    # random 128 x 128 crops; centre and 10 views at 128
    return config
