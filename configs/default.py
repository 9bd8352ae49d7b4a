"""The paper's ImageNet recipe (ILSVRC-2012), exactly: PAPER.md sections 1-5.

Run:
    python -m alexnet_jax.main --config=configs/default.py --workdir=runs/alexnet

ImageNet must be provided by hand (the command says how if it is missing). Any key can be
overridden on the command line, e.g. --config.model.lrn=False.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed for initialisation, data order and augmentation

    config.data = data = ml_collections.ConfigDict()
    data.name = "imagenet2012"  # imagenet2012 | imagenette | cifar10 | folder | synthetic | prepared
    data.path = ""              # ImageFolder tree (train/<class>/*, val/<class>/*) for folder; for
                                # imagenette/cifar10 a local copy used instead of downloading; for
                                # prepared, a folder of prepared squares (no TensorFlow needed)
    data.data_dir = ""          # where tfds keeps prepared data; "" = tfds default
    data.resize_size = 256      # shorter side -> this, then the central square (paper: 256)
    # The paper down-sampled every image once to 256 x 256: "256" writes each split once as
    # S x S squares (S = resize_size) and trains from them (the host decodes only each random
    # crop's window); "none" decodes and resizes the original files every epoch.
    data.prepared = "256"
    data.prepared_format = "jpeg"  # storage of the squares: jpeg (4:2:0) | jpeg444 | raw (uint8)
    data.prepared_quality = 90     # JPEG quality of the squares (docs/performance.md)
    # files of the squares: tfrecord (what tf.data reads) | array_record (what data.name=prepared
    # reads without TensorFlow; written by --mode=prepare)
    data.file_format = "tfrecord"
    data.read_workers = -1  # data.name=prepared: reading worker processes (-1: cores - 1; 0: threads)
    data.feed_thread = True  # make and send training batches in a thread beside the training loop
    data.num_classes = 1000        # synthetic only: number of classes
    data.synthetic_examples = 12_800  # synthetic only: training images per epoch
    data.crop_size = 224        # network input (paper: 224; Caffe geometry: 227)
    data.random_crop = True     # augmentation 1: random crop_size patches...
    data.random_flip = True     # ...and their horizontal mirrors
    data.mean = "image"         # subtracted mean: image (per-pixel mean image, the paper) | channel | none
    data.lighting = "cuda_convnet2"  # PCA lighting: cuda_convnet2 (component stds) | eigenvalue | none
    data.lighting_strength = 0.1     # std of the random lighting coefficients a_i
    data.stats_source = "dataset"    # mean and RGB PCA from: dataset (computed, cached) | imagenet (published)
    data.stats_sample = 10_000       # training images the statistics are computed from (0 = all)
    data.shuffle_buffer = 10_000  # examples in the shuffle buffer (encoded bytes)
    # How processes share the data: interleaved = every process scans the same shuffled order
    # and decodes its slice of each global batch (same batches for any process count);
    # split = each process reads its own part of the files (less I/O; order depends on count).
    data.process_sharding = "interleaved"

    config.model = model = ml_collections.ConfigDict()
    model.arch = "alexnet"      # alexnet | cifar_conv_local (the paper's CIFAR-10 net)
    model.columns = 2           # 2 = the paper's two columns; 1 = the one-column ablation
    model.conv_widths = (96, 256, 384, 384, 256)  # kernels per conv layer (both columns)
    model.fc_widths = (4096, 4096)                # units of fc6, fc7
    model.lrn = True            # local response normalisation after conv1 and conv2
    model.lrn_n = 5             # adjacent maps summed over
    model.lrn_k = 2.0           # LRN (section 3.3): b = a / (k + alpha * sum a^2) ^ beta
    model.lrn_alpha = 1e-4      # alpha of that formula (the paper: 1e-4)
    model.lrn_beta = 0.75       # beta of that formula (the paper: 0.75)
    model.lrn_alpha_over_n = False  # True: alpha / n (cuda-convnet, Caffe, PyTorch semantics)
    model.overlap_pool = True   # 3x3 stride-2 pooling (True) or 2x2 stride 2 (False)
    model.dropout_rate = 0.5    # dropout on fc6 and fc7; 0 turns it off
    model.activation = "relu"   # relu | tanh
    model.conv1_geometry = "cuda_convnet"  # cuda_convnet (224, pad 0/3) | caffe (227) | torchvision (224, pad 2)
    model.init_std = 0.01       # weights ~ N(0, init_std^2)
    model.positive_bias = 1.0   # bias of conv2, conv4, conv5, fc6, fc7 (Caffe used 0.1)
    model.column_impl = "split"  # own-column convs: split (one conv per column) | grouped
    # Exactly equal formulations, chosen by speed: auto = the one measured fastest on the
    # platform (GPU, TPU: slices and space_to_depth; CPU: matmul and direct; docs/performance.md)
    model.lrn_impl = "auto"     # LRN window sums: auto | matmul (banded matrix) | slices (n adds)
    model.conv1_impl = "auto"   # conv1: auto | direct (11x11/4) | space_to_depth (3x3 over 4x4)
    model.conv_grad_impl = "auto"  # conv kernel gradients: auto | xla | matmul (a product a tap)
    model.cpu_conv_impl = "auto"  # XLA:CPU's convolutions: auto | eigen (its own) | ynnpack
    model.dtype = "float32"     # compute dtype: float32 | bfloat16 (LRN always in float32)

    config.optimizer = optimizer = ml_collections.ConfigDict()
    optimizer.name = "momentum"     # momentum (the paper's SGD) | lars (You et al. 2017)
    optimizer.learning_rate = 0.01  # initial learning rate, all layers
    # linear: the rate is learning_rate * batch_size / 128 (Goyal et al. 2017); none: as given
    optimizer.lr_scaling = "none"
    optimizer.trust_coefficient = 0.001  # lars: the trust coefficient eta
    optimizer.momentum = 0.9        # the paper: 0.9
    optimizer.weight_decay = 0.0005  # the paper: 0.0005 (how it enters: decay_mode)
    optimizer.decay_mode = "paper"  # paper (decay inside the momentum) | decoupled
    optimizer.decay_biases = False  # cuda-convnet decayed weights only
    # per-layer decay (cuda-convnet's wc), by layer: --config.optimizer.layer_weight_decay='{"fc8": 0.01}'
    optimizer.layer_weight_decay = ml_collections.ConfigDict()

    config.schedule = schedule = ml_collections.ConfigDict()
    schedule.name = "plateau"   # plateau (the paper) | step | constant
    schedule.factor = 0.1       # the rate is divided by 10...
    schedule.patience = 4       # ...after this many evaluations without improvement (plateau)
    schedule.min_improvement = 0.0  # top-1 error decrease that counts as an improvement
    schedule.max_reductions = 3  # the paper reduced the rate three times
    schedule.after_last = "stop"  # after the last reduction, the next plateau: stop | continue
    schedule.step_epochs = (30, 60, 80)  # step: epochs at which the rate is multiplied by factor
    # epochs of linear warm-up from optimizer.learning_rate (unscaled) to the scaled rate
    schedule.warmup_epochs = 0.0

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 128      # global batch size
    # k > 1: each optimizer step computes batch_size as k micro-batches of batch_size / k and
    # averages their gradients (the same update; the memory of a micro-batch)
    train.accumulate_steps = 1
    train.num_epochs = 90       # the paper: roughly 90 passes through the training set
    train.num_steps = -1        # if > 0, stop after this many steps instead
    train.log_every_steps = 50  # training metrics to metrics.jsonl / TensorBoard
    train.checkpoint_every_steps = 5000  # also saved at the end of every epoch and of the run
    train.keep_checkpoints = 3  # most recent checkpoints kept (plus the best by validation error)
    train.eval_batch_size = 128  # global batch size for evaluation
    train.epoch_eval_views = 1  # views in the evaluation after each epoch: 1 (centre) | 10 (paper)
    train.final_eval_views = (1, 10)  # views in the final evaluation and --mode=eval; () = none
    # End the run after the first epoch whose mean training top-1 error is at most this (the
    # paper's Figure 1 trains to 25%); 0 = off.
    train.stop_at_train_error = 0.0
    # (first, last): a jax.profiler trace of these steps (as numbered in metrics.jsonl) in the
    # workdir, for TensorBoard's profile tab; () = none
    train.profile_steps = ()

    config.mesh = mesh = ml_collections.ConfigDict()
    # size of the `model` axis: 1 or 2; -1 = 2 when model.columns is 2 and the device count is
    # even (one column per device of a pair), else 1
    mesh.model = -1

    config.lock()
    return config
