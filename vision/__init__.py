"""flowzoo.vision: flow matching on images and video — data, backbones and metrics; pixel and latent flow matching,
better sources, blockwise flows, SymmFlow and the core's few-step methods; inverse problems, inversion and editing;
video data, optical flow, flow-driven video editing and STARFlow-V.

Modules (imported on demand, so ``import flowzoo.vision`` loads neither scikit-image nor Pillow nor OpenCV):
    readers        the original file formats: CIFAR-10 python batches, MNIST IDX (gz or raw), image folders
    datasets       load_images(spec) -> ImageData in [-1, 1]; seeded split, Augment, ImageDataset, ImageBatchSampler
    metrics        Frechet distance, KID, k-NN precision/recall, PSNR, SSIM, PNG sample grids, TensorBoard grids
    features       the per-data-set feature classifier (trained once, cached), ImageEvaluator, Inception features
    vector_features the digits-FID on flat rows: load_digits_vectors, cached vector classifier, VectorEvaluator (FD, KID, label KL)
    nets           image backbones: DiT (velocity model and flow map), adaLN-Zero, JVP-safe attention
    acceleration   training-speed options: prepare_for_training (channels_last, torch.compile with eager fallback)
    sourcefm       SourceFM: norm-aligned Gaussian source, PCA directional pruning (SourceFMSource, SourceFMLoss)
    representation RAE: frozen feature-classifier encoder, per-channel normalised latent, trained decoder (RepresentationAutoencoder)
    autoencoder    conv autoencoder / VAE for latent flow matching (ConvAutoencoder, AutoencoderLoss, train_autoencoder)
    latent         LFM: LatentCodec (latent scale), train_latent_fm (fm, meanflow, MF-RAE's mfrae), generate_latent
    latent_bound   LFM's bound terms: decoder Lipschitz estimate, lfm_bound_terms (recon W2 + L_D x latent W2)
    blockwise_nets BFM network: BlockwiseVelocity (K segment blocks, feature guidance, feature residual net)
    blockwise      BFM losses (BlockwiseFlowMatchingLoss, FeatureResidualLoss), blockwise_sample, flops_per_sample
    segmentation   images with semantic maps: MNIST digit masks, synthetic shapes, MapCodec, mean_iou
    symmflow       SymmFlow: one flow for map->image, image->map and one-step classification; its baselines
    fewstep        few-step methods on images: MeanFlow, SplitMeanFlow, reflow, MF-RAE; BOSS, FlowTurbo, RAAG
    methods        the method registry of flowzoo.vision.train (METHODS, VisionMethod)
    train          ``python -m flowzoo.vision.train <method>``: the Trainer entrypoint, load_trained
    sampling       generate: images from a trained model (solvers, BOSS, FlowTurbo, guidance, flow-map jumps)
    train_latent   the ``autoencoder`` and ``lfm`` methods of that entrypoint; sampling an lfm run
    refiner        FlowTurbo's conv velocity refiner for images (ImageRefiner, conv_macs, check_refiner_run)
    train_symmflow the ``symmflow`` method of that entrypoint on the core Trainer; load_symmflow
    operators      degradation operators with adjoints and pseudo-inverses (inpainting, SR, blur), check_adjoint
    restoration    FLAIR and the baselines: DPS, projection, pseudo-inverse; CRW error tables
    flowopt        FlowOpt zero-order inversion and editing, its step bound; naive reversal, backprop baselines
    video          Moving MNIST and moving textures with exact flows, masks and occlusions; clips; video files
    optical_flow   warping, occlusion masks, warping error, EPE, DIS, Farneback, Horn-Schunck, ReynoldsFlow
    video_edit     FlowVid, FlowV2V shape-calibrated flows, the flow-conditioned editor (``train-editor``)
    starflow       STARFlow-V: causal autoregressive affine flow over video tokens, Jacobi sampling, Gaussian CFG
    cli_restore    ``flowzoo vision restore | measure-crw``; image reading and saving for the commands
    cli_edit       ``flowzoo vision invert | edit | video-edit``
    cli_symmflow   ``flowzoo vision sample | evaluate`` on SymmFlow runs (generate, segment, classify)
    cli            ``flowzoo vision train | sample | evaluate | restore | invert | edit | video-edit | train-editor``
"""

__all__ = ["readers", "datasets", "metrics", "features", "vector_features", "nets", "acceleration", "sourcefm", "representation", "autoencoder", "latent", "latent_bound",
           "blockwise_nets", "blockwise", "segmentation", "symmflow", "fewstep", "methods", "train", "sampling", "train_latent",
           "refiner", "train_symmflow", "operators",
           "restoration", "flowopt", "video", "optical_flow", "video_edit", "starflow", "cli_restore", "cli_edit", "cli_symmflow", "cli"]
