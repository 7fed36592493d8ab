"""Video: flow-driven editing against per-frame editing, optical flow under illumination change, and STARFlow-V.

1. ``vision_video_edit``: Moving MNIST clips (one digit, 32 × 32, 6 frames) edited by ``invert`` and ``scale``.
   Per-frame editing is SDEdit with an image flow prior (each frame: the edit, noised to t = 0.6 with its own
   noise, then sampled to t = 1), hard warping of the edited first frame along flows to frame 1, the flow-conditioned
   generator (FlowVid), and for ``scale`` the FlowV2V shape-calibrated flows; flows to frame 1 are the exact ones plus
   corruption of 0 / 1 / 3 px (:func:`~flowzoo.vision.video_edit.corrupt_flow`). Columns: warping error (temporal
   consistency, on the source video's exact flows and occlusions), MSE and PSNR against the ground-truth edited
   video, and the edited object's mask IoU. The first held-out clip at 1 px flow noise goes into a side-by-side GIF
   (rows: the edits; columns: source, per-frame, hard warp, flow-conditioned, ground truth) in ``--figures``
   (default ``docs/_static/vision``; ``video_edit.quick.gif`` for a quick run).
2. ``vision_video_flow`` and ``vision_video_target``: endpoint error of DIS, Farnebäck, Horn–Schunck (= ReynoldsFlow's v_o) on moving digits and
   moving textures, without and with a global brightness ramp; then the downstream task of ReynoldsFlow: locating a
   tiny moving target under illumination change with a small CNN given (a) the raw frame pair, (b) the Horn–Schunck
   flow, (c) ReynoldsFlow+'s ``[|v_o|, |v_r|, f]`` encoding (mean localisation error in pixels on held-out clips),
   in two settings: a bright flat target on a still background under a gain of 1-1.6, and the paper's harder
   kind (a low-contrast textured target, a camera shift, a gain of 0.5-2 with an illumination ramp).
3. ``vision_video_starflow``: STARFlow-V on 16 × 16 Moving MNIST: held-out bits per dimension, and sequential
   against Jacobi sampling (iterations and wall-clock) for 2, 4 and 8 frames.

Run (``--quick``: about 10 minutes on 2 quiet CPU cores)::

    .venv/bin/python -m benchmarks.vision_video --quick
    .venv/bin/python -m benchmarks.vision_video
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo.vision.datasets import load_images
from flowzoo.vision.optical_flow import (dis_flow, endpoint_error, farneback_flow, horn_schunck, reynolds_encoding,
                                         reynolds_flow, warping_error)
from flowzoo.vision.starflow import STARFlow, STARFlowLoss, bits_per_dim
from flowzoo.vision.video import compose_video, moving_digits, moving_textures
from flowzoo.vision.video_edit import (FlowConditionedEditor, FrameConditionNet, apply_edit, corrupt_flow,
                                       exact_flows_to_first, hard_warp_edit, random_appearance, shape_calibrated_flow)

from benchmarks.results import reproduce_command, save_table

QUICK = {"clips": 48, "edit_steps": 400, "test_clips": 8, "flow_clips": 6, "target_clips": 160, "cnn_steps": 300,
         "starflow_steps": 300, "frame_list": "2,4,8"}
FULL = {"clips": 192, "edit_steps": 2000, "test_clips": 32, "flow_clips": 24, "target_clips": 600, "cnn_steps": 1500,
        "starflow_steps": 2000, "frame_list": "2,4,8"}
NOISE_LEVELS = (0.0, 1.0, 3.0)
FIGURES = "docs/_static/vision"
CONTRAST = 0.25         # the hard tiny target: its mean above the local background
GIF_NOISE = 1.0          # the side-by-side GIF shows the first held-out clip at this flow noise
GIF_COLUMNS = ("source", "per-frame (SDEdit)", "hard warp", "flow-conditioned", "ground truth")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (see QUICK)")
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=None, help=f"full: {default}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--figures", default=FIGURES, help="folder of the side-by-side GIF of the edits (a quick "
                        "run's name ends in .quick.gif)")
    parser.add_argument("--no-figure", action="store_true", help="write no GIF")
    return parser


# -- 1. editing -------------------------------------------------------------------------------------------------
def _train_editors(clips, flows, occluded, steps: int, seed: int):
    torch.manual_seed(seed)
    editor = FlowConditionedEditor(1, width=32, flow_noise=1.0)
    prior = FrameConditionNet(1, 0, width=32)
    params = [*editor.net.parameters(), *prior.parameters()]
    optimiser = torch.optim.Adam(params, lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pick = torch.randint(0, clips.shape[0], (8,), generator=gen)
        loss = editor.loss(clips[pick], flows[pick], occluded[pick], generator=gen)
        frames = random_appearance(clips[pick], gen).flatten(0, 1)
        x0, tau = torch.randn(frames.shape, generator=gen), torch.rand(frames.shape[0], generator=gen)
        x_t = (1 - tau)[:, None, None, None] * x0 + tau[:, None, None, None] * frames
        empty = frames[:, :0]
        loss = loss + ((prior(x_t, tau, empty) - (frames - x0)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return editor, prior


@torch.no_grad()
def _sdedit(prior, frames: torch.Tensor, start: float = 0.6, steps: int = 10, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(seed))
    x = start * frames + (1 - start) * noise
    grid = torch.linspace(start, 1.0, steps + 1).tolist()
    for a, b in zip(grid[:-1], grid[1:]):
        x = x + (b - a) * prior(x, torch.full((x.shape[0],), a), frames[:, :0])
    return x


def side_by_side_gif(strips: dict[str, dict[str, torch.Tensor]], path: Path, *, zoom: int = 3,
                     fps: float = 4.0) -> Path:
    """A GIF with one row per edit and one labelled column per video (T, 1, H, W) in [−1, 1] of ``strips``."""
    from PIL import Image, ImageDraw
    rows = []
    for videos in strips.values():
        row = [F.interpolate(v.clamp(-1, 1), scale_factor=zoom, mode="nearest") for v in videos.values()]
        gap = torch.ones(row[0].shape[0], 1, row[0].shape[-2], 2)
        rows.append(torch.cat([p for v in row for p in (v, gap)][:-1], dim=-1))
    gap = torch.ones(rows[0].shape[0], 1, 2, rows[0].shape[-1])
    video = torch.cat([p for r in rows for p in (r, gap)][:-1], dim=-2)
    pixels = ((video[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    header, width = 12, pixels.shape[-1] // len(next(iter(strips.values())))
    frames = []
    for frame in pixels:
        image = Image.new("L", (frame.shape[1], frame.shape[0] + header), 255)
        image.paste(Image.fromarray(frame), (0, header))
        draw = ImageDraw.Draw(image)
        for col, name in enumerate(next(iter(strips.values()))):
            draw.text((col * width + 2, 0), name.replace(" (SDEdit)", ""), fill=0)
        frames.append(image.convert("P"))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def _edit_rows(args) -> tuple[list[dict], dict]:
    data = moving_digits(args.clips + args.test_clips, frames=6, size=32, digits=1, digit_size=16, seed=args.seed)
    to_first = torch.stack([exact_flows_to_first(data.flows[v], data.masks[v]) for v in range(len(data))])
    # background of frame k that the object covered in frame 1 has no source there: occluded
    occ_first = (~data.masks[:, 1:, :1]) & data.masks[:, :1, :1]
    train = slice(0, args.clips)
    editor, prior = _train_editors(data.frames[train], to_first[train], occ_first[train], args.edit_steps, args.seed)
    rows, strips = [], {}
    for edit in ("invert", "scale"):
        for noise in NOISE_LEVELS:
            scores: dict[str, list] = {}
            for v in range(args.clips, args.clips + args.test_clips):
                src, truth = data.frames[v], apply_edit(data.frames[v], edit)
                flows = corrupt_flow(to_first[v], noise, torch.Generator().manual_seed(v)) if noise else to_first[v]
                outputs = {"per-frame (SDEdit)": torch.cat([truth[:1], _sdedit(prior, truth[1:], seed=v)]),
                           "hard warp": hard_warp_edit(src, edit, flows=flows, occluded=occ_first[v]).frames,
                           "flow-conditioned": editor.edit(src, edit, flows, occ_first[v], seed=v)}
                if edit == "scale":
                    calibrated = shape_calibrated_flow(flows, src)
                    outputs["hard warp, calibrated flow"] = hard_warp_edit(src, edit, flows=calibrated,
                                                                           occluded=occ_first[v]).frames
                    outputs["flow-conditioned, calibrated"] = editor.edit(src, edit, calibrated, occ_first[v], seed=v)
                if v == args.clips and noise == GIF_NOISE:
                    strips[edit] = {**{"source": src}, **{k: outputs[k] for k in GIF_COLUMNS[1:-1]},
                                    "ground truth": truth}
                for name, out in outputs.items():
                    mse = float(((out - truth) ** 2).mean())
                    iou = float(((out > 0) & (truth > 0)).sum() / ((out > 0) | (truth > 0)).sum().clamp_min(1))
                    scores.setdefault(name, []).append(
                        (warping_error(out, data.flows[v], data.occluded[v]), mse, 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-10))).item(), iou))
            for name, values in scores.items():
                mean = torch.tensor(values).mean(0).tolist()
                rows.append({"edit": edit, "flow noise px": noise, "method": name, "warping error": mean[0],
                             "MSE to truth": mean[1], "PSNR": mean[2], "mask IoU": mean[3]})
    return rows, strips


# -- 2. optical flow --------------------------------------------------------------------------------------------
def _flow_rows(args) -> list[dict]:
    rows = []
    sets = {"moving digits": lambda b: moving_digits(args.flow_clips, frames=3, size=48, digits=2, digit_size=20,
                                                     brightness=b, seed=args.seed),
            "moving textures": lambda b: moving_textures(args.flow_clips, frames=3, size=48, sprite_size=21,
                                                         brightness=b, seed=args.seed)}
    estimators = {"DIS": dis_flow, "Farnebäck": farneback_flow,
                  "Horn-Schunck (v_o)": lambda a, b: horn_schunck(a, b, alpha=0.3, iterations=300),
                  "ReynoldsFlow (v_o + v_r)": lambda a, b: sum(reynolds_flow(a, b, alpha=0.3, iterations=300))}
    for name, make in sets.items():
        for brightness in (0.0, 0.3):
            video = make(brightness)
            first, second = video.frames[:, 0], video.frames[:, 1]
            visible = ~video.occluded[:, 0]
            for est_name, estimate in estimators.items():
                started = time.perf_counter()
                flow = estimate(first, second)
                rows.append({"data": name, "brightness ramp": brightness, "estimator": est_name,
                             "EPE": endpoint_error(flow, video.flows[:, 0], visible),
                             "ms per pair": 1000 * (time.perf_counter() - started) / first.shape[0]})
    return rows


def _target_clips(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of frames with a 3 x 3 target moving over a textured background under a random brightness change,
    and the target's centre in the second frame."""
    rng = torch.Generator().manual_seed(seed)
    background = moving_textures(1, frames=2, size=size, sprite_size=5, seed=seed).frames[0, 0, 0]
    pairs, centres = [], []
    for _ in range(n):
        corner = torch.randint(2, size - 6, (2,), generator=rng)
        step = torch.randint(-2, 3, (2,), generator=rng)
        sprite = torch.full((1, 1, 3, 3), 0.9)
        corners = torch.stack([corner, corner + step])[:, None].numpy()
        frames, *_ = compose_video(sprite, torch.ones(1, 3, 3, dtype=torch.bool), corners, (background[None] + 1) / 2)
        gain = 1.0 + 0.6 * torch.rand(1, generator=rng)
        frames = torch.stack([frames[0], (frames[1] * gain).clamp(0, 1)]) * 2 - 1
        pairs.append(frames)
        centres.append((corner + step).float() + 1.0)
    return torch.stack(pairs), torch.stack(centres)


def _hard_target_clips(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's harder setting at toy scale: a textured 3 x 3 target of low contrast (its mean CONTRAST above the
    local background, its texture ±0.1) over one of eight natural-image backgrounds, a camera shift of up to 1 px
    between the frames, and a strong illumination change on the second frame (gain 0.5-2 times a horizontal
    ramp of ±30 %, plus an offset of ±0.1)."""
    rng = torch.Generator().manual_seed(seed)
    pool = (load_images("patches", split="train", size=size + 4, count=8, seed=seed, channels=1).images + 1) / 2
    ramp = torch.linspace(-1, 1, size)[None, None, :]
    pairs, centres = [], []
    for _ in range(n):
        background = pool[int(torch.randint(0, len(pool), (1,), generator=rng))]
        shift = torch.randint(-1, 2, (2,), generator=rng)
        views = [background[:, 2:2 + size, 2:2 + size].clone(),
                 background[:, 2 + shift[1]:2 + shift[1] + size, 2 + shift[0]:2 + shift[0] + size].clone()]
        corner = torch.randint(4, size - 8, (2,), generator=rng)       # room for the shift and the step
        corners = [corner, corner + shift + torch.randint(-2, 3, (2,), generator=rng)]
        texture = 0.1 * (2 * torch.rand(1, 3, 3, generator=rng) - 1)
        for view, (x, y) in zip(views, corners):
            local = view[:, y:y + 3, x:x + 3]
            view[:, y:y + 3, x:x + 3] = (local.mean() + CONTRAST + texture).clamp(0, 1)
        gain = torch.exp((2 * torch.rand(1, generator=rng) - 1) * math.log(2.0))
        tilt = 1 + 0.3 * (2 * torch.rand(1, generator=rng) - 1) * ramp
        offset = 0.1 * (2 * torch.rand(1, generator=rng) - 1)
        views[1] = (views[1] * gain * tilt + offset).clamp(0, 1)
        pairs.append(torch.stack(views) * 2 - 1)
        centres.append(corners[1].float() + 1.0)
    return torch.stack(pairs), torch.stack(centres)


def _locate(inputs: torch.Tensor, centres: torch.Tensor, train: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(inputs.shape[1], 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))
    h, w = inputs.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")

    def predict(x):
        heat = F.softmax(net(x).flatten(1), dim=1).reshape(-1, h, w)
        return torch.stack([(heat * xs).sum((1, 2)), (heat * ys).sum((1, 2))], 1)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        pick = torch.randint(0, train, (32,))
        loss = (predict(inputs[pick]) - centres[pick]).norm(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float((predict(inputs[train:]) - centres[train:]).norm(dim=1).mean())


def _target_rows(args) -> list[dict]:
    rows = []
    settings = {"bright flat target, gain 1-1.6": _target_clips,
                "low-contrast textured target, camera shift, gain 0.5-2 with a ramp": _hard_target_clips}
    for setting, make in settings.items():
        pairs, centres = make(args.target_clips, args.seed)
        first, second = pairs[:, 0], pairs[:, 1]
        v_o, v_r = reynolds_flow(first, second, alpha=0.3, iterations=200)
        representations = {"raw frame pair": torch.cat([first, second], 1),
                            "Horn-Schunck flow (v_o)": torch.cat([v_o, second], 1),
                            "ReynoldsFlow+ [|v_o|, |v_r|, f]": reynolds_encoding(second, v_o, v_r)}
        train = int(0.75 * len(pairs))
        rows += [{"setting": setting, "input": name,
                  "held-out localisation error px": _locate(x, centres, train, args.cnn_steps, args.seed)}
                 for name, x in representations.items()]
    return rows


# -- 3. STARFlow-V ----------------------------------------------------------------------------------------------
def _starflow_rows(args) -> list[dict]:
    data = moving_digits(160, frames=4, size=32, digits=1, digit_size=16, seed=args.seed)
    videos = F.avg_pool2d(data.frames.flatten(0, 1), 2).reshape(160, 4, 1, 16, 16)
    train, test = videos[:128], videos[128:]
    torch.manual_seed(args.seed)
    flow = STARFlow(frames=4, channels=1, size=16, patch=4, width=48, depth=2, blocks=2)
    loss = STARFlowLoss(0.3)
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(args.starflow_steps):
        value, _ = loss(flow, {"x1": train[torch.randint(0, 128, (16,))]})
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    flow.eval()
    with torch.no_grad():
        noisy = test + 0.3 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
        bpd = float(bits_per_dim(flow.nll(noisy).mean(), noisy[0].numel()))
    rows = [{"measure": "held-out bits/dim (σ_n = 0.3 noise-augmented)", "frames": 4, "value": bpd}]
    for frames in (int(f) for f in args.frame_list.split(",")):
        model = STARFlow(frames=frames, channels=1, size=16, patch=4, width=48, depth=2, blocks=2).eval()
        model.load_state_dict({k: v for k, v in flow.state_dict().items() if "position" not in k}, strict=False)
        z = torch.randn(2, model.length, model.token_dim, generator=torch.Generator().manual_seed(0))
        timings = {}
        for method in ("sequential", "jacobi"):
            stats, started = {}, time.perf_counter()
            x = model.inverse(z, method=method, jacobi_tol=1e-4, stats=stats)
            timings[method] = (time.perf_counter() - started, sum(stats["iterations"]), x)
        gap = float((timings["sequential"][2] - timings["jacobi"][2]).abs().max())
        rows.append({"measure": f"tokens {model.length}: passes sequential / Jacobi", "frames": frames,
                     "value": f"{timings['sequential'][1]} / {timings['jacobi'][1]}"})
        rows.append({"measure": f"tokens {model.length}: seconds sequential / Jacobi (max gap {gap:.1e})",
                     "frames": frames, "value": f"{timings['sequential'][0]:.2f} / {timings['jacobi'][0]:.2f}"})
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(args.threads)
    started, command = time.perf_counter(), reproduce_command("benchmarks.vision_video", argv)
    edit_rows, strips = _edit_rows(args)
    if not args.no_figure:
        gif = side_by_side_gif(strips, Path(args.figures) / f"video_edit{'.quick' if args.quick else ''}.gif")
        print(f"GIF: {gif}")
    tables = {"edit": edit_rows, "flow": _flow_rows(args), "target": _target_rows(args),
              "starflow": _starflow_rows(args)}
    for name, rows in tables.items():
        print(f"\n{name}:")
        for row in rows:
            print(row)
    save_table("vision_video_edit", tables["edit"], title="Video editing on Moving MNIST: per-frame, hard warp, "
               "flow-conditioned", command=command, quick=args.quick,
               notes=[f"{args.clips} training clips, {args.edit_steps} updates; {args.test_clips} held-out clips"])
    save_table("vision_video_flow", tables["flow"], title="Optical flow endpoint error, with and without a "
               "brightness ramp", command=command, quick=args.quick,
               notes=[f"{args.flow_clips} clips per set; EPE over pixels visible in the second frame"])
    save_table("vision_video_target", tables["target"], title="Tiny-target localisation under illumination change "
               "(ReynoldsFlow's downstream task)", command=command, quick=args.quick,
               notes=[f"{args.target_clips} frame pairs (75 % train), {args.cnn_steps} CNN updates"])
    save_table("vision_video_starflow", tables["starflow"], title="STARFlow-V on 16x16 Moving MNIST",
               command=command, quick=args.quick, notes=[f"{args.starflow_steps} training updates of batch 16"])
    print(f"\n{time.perf_counter() - started:.0f} s")
    return tables


if __name__ == "__main__":
    main()
