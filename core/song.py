"""The song pipeline, read top to bottom: validate → plan → condition → diffuse → finish → store.

`SongEngine.run_job` is the worker's handler for "song" jobs. Each stage is a method named
for what it produces, so it can be tested alone and the order is visible in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core import audio as audio_io
from core.jobs import JobContext, StudioError
from core.request import SongRequest, resolve_seed, take_seeds, validate

if TYPE_CHECKING:
    from core.dit import LoadedDit
    from core.studio import Studio

# ACE-Step's instruction for a cover: the source carries the structure as semantic hints.
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"


@dataclass
class Conditioning:
    """Everything one pipeline call needs, plus how to turn its output into the take."""

    kwargs: dict[str, Any]
    infer_method: str = "ode"
    finish: Callable[[np.ndarray], np.ndarray] = lambda audio: audio
    extra_meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceAudio:
    item_id: str
    samples: np.ndarray  # (2, n) float32 at 48 kHz


def resolved_steps(request: SongRequest, dit: LoadedDit) -> int:
    # diffusers defaults every checkpoint to 8 steps, so the variant default is always passed.
    return request.steps or dit.defaults.steps


def resolved_guidance(request: SongRequest, dit: LoadedDit) -> float:
    if not dit.defaults.uses_cfg:
        return 1.0
    return request.guidance if request.guidance is not None else dit.defaults.guidance


def text2music_kwargs(request: SongRequest, dit: LoadedDit) -> dict[str, Any]:
    """The pipeline arguments shared by every task: text, metadata and sampling."""
    return dict(
        prompt=request.caption,
        lyrics=request.sung_lyrics,
        audio_duration=float(request.duration),
        vocal_language=request.language,
        num_inference_steps=resolved_steps(request, dit),
        guidance_scale=resolved_guidance(request, dit),
        shift=request.shift,
        bpm=request.bpm,
        keyscale=request.key,
        timesignature=str(request.time_signature) if request.time_signature else None,
        cfg_interval_start=request.cfg_start,
        cfg_interval_end=request.cfg_end,
        task_type="text2music",
        output_type="pt",
    )


class SongEngine:
    def __init__(self, studio: Studio):
        self.studio = studio

    # --- the worker's entry point --------------------------------------------------------

    def run_job(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        request = self.validated(SongRequest.from_dict(payload["request"]))
        ctx.progress("loading model", 0, 1)
        started = time.time()
        dit = self.studio.load_dit()
        ctx.record_timing("load_seconds", time.time() - started)
        source = self.source_audio(request)
        request = self.plan(ctx, request, dit)
        self.studio.apply_loras(dit, request)
        first_seed = resolve_seed(request.seed)
        seeds = take_seeds(first_seed, request.takes)
        steps = resolved_steps(request, dit)
        take_ids: list[str] = []
        for take_index, seed in enumerate(seeds):
            conditioning = self.condition(request, dit, source)
            timings: dict[str, float] = {}
            samples = self.diffuse(
                ctx, dit, conditioning, seed, take_index, len(seeds), steps, timings
            )
            samples = conditioning.finish(samples)
            item = self.store(ctx, request, dit, samples, seed, take_index, conditioning, timings)
            take_ids.append(item.id)
        return {"take_ids": take_ids, "seed": first_seed}

    # --- stages --------------------------------------------------------------------------

    def validated(self, request: SongRequest) -> SongRequest:
        return validate(request, self.studio.settings)

    def source_audio(self, request: SongRequest) -> SourceAudio | None:
        if not request.source_id:
            return None
        item = self.studio.library.find(request.source_id)
        if item is None or item.audio_file is None:
            raise StudioError("The source song is no longer in the library; pick another one.")
        return SourceAudio(item.id, self.studio.library.read_audio(item.id).samples)

    def plan(self, ctx: JobContext, request: SongRequest, dit: LoadedDit) -> SongRequest:
        """Let the 5 Hz LM planner fill in the request; without thinking it is unchanged."""
        planner = self.studio.planner_stage
        if planner is None:
            return request
        return planner(ctx, request, dit)

    def condition(
        self, request: SongRequest, dit: LoadedDit, source: SourceAudio | None
    ) -> Conditioning:
        kwargs = text2music_kwargs(request, dit)
        if request.audio_codes:
            kwargs["audio_codes"] = request.audio_codes
            # The length comes from the codes; -1 makes the metadata line say so.
            kwargs["audio_duration"] = -1
        conditioning = Conditioning(kwargs=kwargs, infer_method=request.infer_method)
        task_stage = self.studio.task_stages.get(request.task)
        if task_stage is not None:
            conditioning = task_stage(request, dit, source, conditioning)
        elif request.task != "generate":
            raise StudioError(f"This Studio cannot run {request.task} songs yet.")
        return conditioning

    def diffuse(
        self,
        ctx: JobContext,
        dit: LoadedDit,
        conditioning: Conditioning,
        seed: int,
        take_index: int,
        takes: int,
        steps: int,
        timings: dict[str, float],
    ) -> np.ndarray:
        """Run the pipeline once; returns (2, n) float32 at 48 kHz."""
        pipe = dit.pipe
        done_before = take_index * steps
        total = takes * steps
        diffusion_end: list[float] = []

        def on_step(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            if step + 1 == steps:
                diffusion_end.append(time.time())
            # Raises JobCancelled between steps; the half-denoised latents are dropped with it.
            ctx.progress("diffusion", done_before + step + 1, total)
            return callback_kwargs

        generator = torch.Generator(device="cpu" if dit.device == "mps" else dit.device)
        generator.manual_seed(seed)
        scheduler = pipe.scheduler
        if conditioning.infer_method == "sde":
            from diffusers import FlowMatchEulerDiscreteScheduler

            # Upstream's sde re-noises from the predicted clean latent each step, which is
            # exactly diffusers' stochastic_sampling flag.
            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
                scheduler.config, stochastic_sampling=True
            )
        # The pipeline VAE-encodes sources and draws sde noise from torch's global RNG
        # without the generator, so seed that too or the same seed gives another song.
        torch.manual_seed(seed)
        started = time.time()
        try:
            with torch.inference_mode():
                output = pipe(
                    **conditioning.kwargs,
                    generator=generator,
                    callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=["latents"],
                )
        finally:
            pipe.scheduler = scheduler
        finished = time.time()
        diffusion_done = diffusion_end[0] if diffusion_end else finished
        timings["diffusion_seconds"] = round(diffusion_done - started, 3)
        timings["decode_seconds"] = round(finished - diffusion_done, 3)
        ctx.record_timing("diffusion_seconds", timings["diffusion_seconds"])
        ctx.record_timing("decode_seconds", timings["decode_seconds"])
        samples = output.audios[0].float().cpu().numpy()
        if not np.all(np.isfinite(samples)):
            raise StudioError(
                "The model produced invalid audio (NaN). Try another seed, or float32 "
                "(ACE_STUDIO_DTYPE=float32) on this device."
            )
        return samples.astype(np.float32)

    def store(
        self,
        ctx: JobContext,
        request: SongRequest,
        dit: LoadedDit,
        samples: np.ndarray,
        seed: int,
        take_index: int,
        conditioning: Conditioning,
        timings: dict[str, float],
    ):
        take_request = request.with_seed(seed)
        job = ctx.queue.get(ctx.job_id)
        meta = {
            "request": take_request.to_dict(),
            "seed": seed,
            "takes_in_job": request.takes,
            "sample_rate": audio_io.SAMPLE_RATE,
            "models": self.studio.model_provenance(dit),
            "timings": timings,
            "plan": job.plan if job else None,
            "pipeline": {
                "steps": conditioning.kwargs.get("num_inference_steps"),
                "guidance": conditioning.kwargs.get("guidance_scale"),
                "shift": conditioning.kwargs.get("shift"),
                "task_type": conditioning.kwargs.get("task_type"),
            },
            **conditioning.extra_meta,
        }
        title = request.title or request.caption[:60]
        return self.studio.library.add(
            "take",
            meta,
            samples=samples,
            title=title,
            caption=request.caption,
            parent_id=request.source_id,
            operation=request.task,
            job_id=ctx.job_id,
            take_index=take_index,
        )
