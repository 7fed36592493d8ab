"""flowzoo.vision: flow matching on images — data, backbones and image metrics (pixel I-CFM / OT-CFM so far; the image methods are coming).

Modules (imported on demand, so ``import flowzoo.vision`` loads neither scikit-image nor Pillow):
    readers     the original file formats: CIFAR-10 python batches, MNIST IDX (gz or raw), image folders
    datasets    load_images("mnist" | "digits" | "faces" | "patches" | "folder:PATH" | "cifar10:PATH" |
                "mnist:PATH") -> ImageData in [-1, 1]; seeded split, Augment, ImageDataset, ImageBatchSampler
    metrics     Frechet distance, KID, k-NN precision/recall, PSNR, SSIM, PNG sample grids, TensorBoard grids
    features    the per-data-set feature classifier (trained once, cached), ImageEvaluator, Inception features
    nets        image backbones: DiT (velocity model and flow map); GPU helpers (channels_last, compile)
    train       ``python -m flowzoo.vision.train icfm|otcfm``: the Trainer entrypoint, METHODS, load_trained, generate
    cli         ``flowzoo vision train | sample | evaluate``
"""

__all__ = ["readers", "datasets", "metrics", "features", "nets", "train", "cli"]
