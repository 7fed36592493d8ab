"""flowzoo.robotics: robot policies trained by flow matching, evaluated in simulation, run in a control loop.

Modules (imported on demand, so ``import flowzoo.robotics`` loads neither MuJoCo nor Meta-World):
    envs        Meta-World v3 tasks behind one observation convention, EnvSpec, scripted experts, task registry
    pointcloud  depth rendering, back-projection, workspace crop, farthest point sampling
    data        demonstration datasets on disk, the normaliser, (observation history, action chunk) windows
    collect     scripted-expert collection (``flowzoo robotics collect``)
    nets        DP3-style point encoder, state encoder, conditional 1-D temporal U-Net with FiLM
    policy      FlowPolicy (fm / meanflow / mp1 / dm1), save/load with spec and normaliser
    mp1         MP1: MeanFlow on action chunks, dispersive loss, both guidance forms
    dm1         DM1: dispersive variants on the same policy, representation health
    toy         2-D bimodal obstacle task (one-step collapse vs MP1)
    export      torch.export of a policy for deployment
    controller  fixed-rate control loop: history, chunk queue, background inference, deadlines, safety
    evaluate    simulated evaluation: success / return / latency, best-K vs last, video (``flowzoo robotics evaluate``)
    afm, afm_sim, mppi   Action Flow Matching under drifting dynamics, its simulators, MPPI and dynamics ensembles
    train       ``python -m flowzoo.robotics.train <fm|meanflow|mp1|dm1> --task ... --obs state|pointcloud``
"""

__all__ = ["envs", "pointcloud", "data", "collect", "nets", "policy", "mp1", "dm1", "toy", "export", "controller",
           "evaluate", "afm", "afm_sim", "mppi", "train", "cli"]
