"""flowzoo.robotics: robot policies trained by flow matching, evaluated in simulation, run in a control loop.

Modules (imported on demand, so ``import flowzoo.robotics`` loads neither MuJoCo nor Meta-World):
    spec            EnvSpec (what a policy was trained for), env_spec, observation modes and their checks
    envs            one observation convention for every task, task registry, make_env, scripted experts
    metaworld_env   Meta-World v3 MT1 tasks behind that convention (seeded variations, point clouds, frames)
    pointcloud      depth rendering, back-projection, workspace crop, farthest point sampling
    normalizer      per-dimension min/max scaling of actions and low-dimensional observations to [-1, 1]
    data            demonstration datasets on disk, (observation history, action chunk) windows
    collect         scripted-expert collection (``flowzoo robotics collect``)
    nets            DP3-style point encoder, state encoder, conditional 1-D temporal U-Net with FiLM
    policy_config   PolicyConfig and each method's defaults
    policy          FlowPolicy (fm / meanflow / mp1 / dm1), save/load with spec and normaliser
    mp1             MP1: MeanFlow on action chunks, dispersive loss, both guidance forms
    dm1             DM1: dispersive variants on the same policy, representation health
    toy             2-D bimodal obstacle task (one-step collapse vs MP1)
    export          torch.export of a policy for deployment
    chunking        ChunkPolicy protocol, observation history, action plan with ACT temporal ensembling
    inference_worker  background policy inference for the control loop
    controller      fixed-rate control loop: chunk alignment, deadlines, safety, timing report
    rollout         batched, crash-guarded episode rollouts in a vector env; EvalResult
    tracking        success over training (best-K beside last, plot) and rollout videos
    evaluate        simulated evaluation: success / return / latency (``flowzoo robotics evaluate``)
    mppi            MPPI planner, learned dynamics and dynamics ensembles
    afm/            Action Flow Matching under drifting dynamics (subpackage: method, regimes, controller, ...)
    train           ``python -m flowzoo.robotics.train <fm|meanflow|mp1|dm1> --task ... --obs state|pointcloud``
"""

__all__ = ["spec", "envs", "metaworld_env", "pointcloud", "normalizer", "data", "collect", "nets", "policy",
           "policy_config", "mp1", "dm1", "toy", "export", "chunking", "inference_worker", "controller", "rollout",
           "tracking", "evaluate", "afm", "mppi", "train", "cli"]
