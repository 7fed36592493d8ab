"""flowzoo.vision: flow matching on images — data, backbones, image metrics and pixel I-CFM / OT-CFM (the image
methods of the seed papers come next).

Modules (imported on demand, so ``import flowzoo.vision`` loads neither scikit-image nor Pillow):
    readers     the original file formats: CIFAR-10 python batches, MNIST IDX (gz or raw), image folders
    datasets    load_images(spec) -> ImageData in [-1, 1]; seeded split, Augment, ImageDataset, ImageBatchSampler
    metrics     Frechet distance, KID, k-NN precision/recall, PSNR, SSIM, PNG sample grids, TensorBoard grids
    features    the per-data-set feature classifier (trained once, cached), ImageEvaluator, Inception features
    nets        image backbones: DiT (velocity model and flow map); GPU helpers (channels_last, compile)
    sourcefm    SourceFM: norm-aligned Gaussian source, PCA directional pruning (SourceFMSource, SourceFMLoss)
    train       ``python -m flowzoo.vision.train icfm|otcfm``: the Trainer entrypoint, METHODS, load_trained, generate
    cli         ``flowzoo vision train | sample | evaluate``
"""

__all__ = ["readers", "datasets", "metrics", "features", "nets", "sourcefm", "train", "cli"]
