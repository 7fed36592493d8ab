"""flowzoo.vision: flow matching on images — data, backbones and image metrics (the methods are coming).

Modules (imported on demand, so ``import flowzoo.vision`` loads neither scikit-image nor Pillow):
    readers     the original file formats: CIFAR-10 python batches, MNIST IDX (gz or raw), image folders
    datasets    load_images("mnist" | "digits" | "faces" | "patches" | "folder:PATH" | "cifar10:PATH" |
                "mnist:PATH") -> ImageData in [-1, 1]; seeded split, Augment, ImageDataset, ImageBatchSampler
    metrics     Frechet distance, KID, k-NN precision/recall, PSNR, SSIM, PNG sample grids, TensorBoard grids
    features    the per-data-set feature classifier (trained once, cached), ImageEvaluator, Inception features
    nets        image backbones: DiT (velocity model and flow map)
"""

# Other vision modules add their names to this list (one module per entry, alphabetical order not required).
__all__ = ["readers", "datasets", "metrics", "features", "nets"]
