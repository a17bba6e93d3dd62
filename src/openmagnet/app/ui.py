"""The gradio page of `openmagnet app`: every control maps onto engine.Request; the page only lays
them out, shows progress, and turns errors into a sentence in the status line."""
from __future__ import annotations

import logging
import typing as tp

import gradio as gr

from ..config import FAST_MODE
from .engine import AUDIO_MODES, DEVICES, MAX_CLIPS, MAX_SECONDS, SPANS, SPEEDS, AppError, Engine, Interrupted, \
    Request, error_message, model_choices

log = logging.getLogger(__name__)

INTRO = """# openmagnet
Text-to-music and text-to-sound with MAGNeT (masked, non-autoregressive). One prompt per line; each prompt
gives *variations* clips. Upload audio to continue it, or to regenerate a region of it (edit); ask for more than
the model's window and the clip is made in overlapping windows."""


def _status(kind: str, text: str) -> str:
    return f"**{kind}:** {text}"


def progress_text(step: int, total: int) -> str:
    """What the progress bar says while decoding: 'decoding step 3 / 50'."""
    return f"decoding step {step} / {total}"


def build_app(engine: Engine, default_model: tp.Optional[str] = None) -> gr.Blocks:
    choices = model_choices()
    if default_model and default_model not in choices:
        choices = [default_model] + choices
    default_model = default_model or choices[0]
    d = engine.recommended_params(default_model)  # the model's own files say what it is
    policy = engine.policy
    model_info_text = ("a listed model, or type a hub id or a local model directory" if policy.allow_any_model
                       else "a listed model, or type a model directory inside the server's --model-dir folders"
                       if policy.model_dirs else "a listed model")

    with gr.Blocks(title="openmagnet") as demo:
        gr.Markdown(INTRO)
        model_info = gr.Markdown(engine.model_info(), elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=3):
                prompts = gr.Textbox(label="Prompts (one per line)", lines=3, elem_id="prompts",
                                     placeholder="a slow, sad piano ballad in A minor at 70 bpm")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Interrupt", variant="stop", elem_id="interrupt")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                model = gr.Dropdown(choices, value=default_model, allow_custom_value=True, label="Model",
                                    info=model_info_text, elem_id="model")
                device = gr.Radio(list(DEVICES), value="auto", label="Device",
                                  info="auto: CUDA, then MPS, then CPU")
                fast = gr.Checkbox(False, label="Fast mode", elem_id="fast",
                                   info=f"{FAST_MODE}; the model line says which")
                speed = gr.Radio(list(SPEEDS), value="reference", label="Decoding", elem_id="speed",
                                 info="turbo: about half the forward passes (guidance reused, fewer steps for "
                                      "codebooks 2-4); reference: audiocraft's decoding")
        with gr.Accordion("Sampling", open=False):
            with gr.Row():
                span = gr.Radio(list(SPANS), value="stride1", label="Span arrangement")
                variations = gr.Number(1, label=f"Variations per prompt (1 to {MAX_CLIPS})", precision=0)
                seed = gr.Number(-1, label="Seed (-1: random)", precision=0)
            with gr.Row():
                steps = [gr.Number(d["decoding_steps"][k], label=f"Steps, codebook {k + 1}", precision=0)
                         for k in range(4)]
            with gr.Row():
                temperature = gr.Number(d["temperature"], label="Temperature")
                top_p = gr.Number(d["top_p"], label="Top-p")
                max_cfg = gr.Number(d["max_cfg_coef"], label="Max CFG")
                min_cfg = gr.Number(d["min_cfg_coef"], label="Min CFG")
                remask_noise = gr.Number(d.get("remask_noise", 0.0), label="Re-masking noise", elem_id="remask-noise",
                                         info="0: the reference's sampler; ~3 keeps a small model from collapsing")
        with gr.Accordion("Length, loop and negative prompt", open=False):
            with gr.Row():
                duration = gr.Slider(0, MAX_SECONDS, value=0, step=0.5, label="Duration (s)", elem_id="duration",
                                     info="0: the model's window; longer clips are made in overlapping windows")
                loop = gr.Checkbox(False, label="Loop", elem_id="loop",
                                   info="a clip that repeats without a seam (one window at most)")
            negative = gr.Textbox("", label="Negative prompt", elem_id="negative", placeholder="drums, distortion",
                                  info="what to steer away from: replaces the empty prompt of the guidance")
        with gr.Accordion("Audio prompt: continue or edit (optional)", open=False):
            prompt_audio = gr.Audio(sources=["upload"], type="filepath", elem_id="prompt-audio",
                                    label=f"Audio to continue or edit (at most {policy.max_upload_mb:g} MB and "
                                          f"{policy.max_upload_seconds:g} s)")
            audio_mode = gr.Radio(list(AUDIO_MODES), value="continue", label="Use it to", elem_id="audio-mode",
                                  info="continue: keep its start and generate the rest; edit: regenerate one region, "
                                       "the rest stays (the model's window at most)")
            with gr.Row():
                prompt_seconds = gr.Number(3.0, label="Continue: seconds to keep (from the start)")
                region_start = gr.Number(0.0, label="Edit: region start (s)", elem_id="region-start")
                region_end = gr.Number(0.0, label="Edit: region end (s)", elem_id="region-end")
        slots: tp.List[tp.Tuple[gr.Audio, gr.Image]] = []
        for i in range(MAX_CLIPS):
            with gr.Row(visible=False) as row:
                audio = gr.Audio(type="filepath", label=f"Clip {i + 1}", interactive=False,
                                 buttons=["download"], elem_id=f"clip-{i}",
                                 waveform_options=gr.WaveformOptions(show_recording_waveform=False))
                image = gr.Image(type="filepath", label="Spectrogram", interactive=False, elem_id=f"spec-{i}")
            slots.append((row, audio, image))

        outputs = [status, model_info] + [c for slot in slots for c in slot]
        empty = [gr.update(visible=False), gr.update(value=None), gr.update(value=None)] * MAX_CLIPS

        # The API's parameters (gradio_client, /run) are named after these arguments, in this order; the first 17
        # are those of the first release (clients that pass them positionally keep working), the rest came later.
        def run(model, prompts, span_arrangement="stride1", device="auto", fast=False, variations=1, seed=-1,
                steps_codebook_1=20, steps_codebook_2=10, steps_codebook_3=10, steps_codebook_4=10, temperature=3.0,
                top_p=0.9, max_cfg=10.0, min_cfg=1.0, audio=None, prompt_seconds=3.0, remask_noise=None,
                duration=0.0, loop=False, negative="", audio_mode="continue", region_start=0.0, region_end=0.0,
                speed="reference", request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 - gradio's progress idiom
            req = Request(model=model or "", prompts=prompts or "", span_arrangement=span_arrangement,
                          steps=(steps_codebook_1, steps_codebook_2, steps_codebook_3, steps_codebook_4),
                          temperature=temperature, top_p=top_p, max_cfg=max_cfg, min_cfg=min_cfg, seed=seed,
                          variations=variations, prompt_audio=audio, prompt_seconds=prompt_seconds, device=device,
                          fast=bool(fast), remask_noise=remask_noise, duration=duration, loop=bool(loop),
                          negative=negative or "", audio_mode=audio_mode or "continue", region_start=region_start,
                          region_end=region_end, speed=speed or "reference")
            session = getattr(request, "session_hash", None) or "local"
            try:
                outcome = engine.generate(req, session,
                                          lambda step, total: progress(step / total, desc=progress_text(step, total)))
            except Interrupted as exc:
                return [_status("Interrupted", f"stopped at decoding step {exc.step} of {exc.total}; "
                                               "nothing was kept."), engine.model_info()] + empty
            except AppError as exc:
                return [_status("Error", str(exc)), engine.model_info()] + empty
            except Exception as exc:  # noqa: BLE001 - the page gets a sentence, the log the traceback
                log.exception("generation failed")
                return [_status("Error", error_message(exc)), engine.model_info()] + empty
            values = []
            for i in range(MAX_CLIPS):
                if i < len(outcome.clips):
                    clip = outcome.clips[i]
                    values += [gr.update(visible=True), gr.update(value=str(clip.audio), label=clip.caption),
                               gr.update(value=str(clip.image))]
                else:
                    values += [gr.update(visible=False), gr.update(value=None), gr.update(value=None)]
            return [_status("Done", outcome.message), outcome.model_info] + values

        def interrupt(request: gr.Request):
            session = getattr(request, "session_hash", None)
            if engine.interrupt(session):
                return _status("Interrupting", "stopping after the current decoding step…")
            return _status("Nothing to interrupt", "no generation of yours is running.")

        def model_defaults(name, device="auto", fast=False):
            v = engine.recommended_params(name or "", device or "auto", bool(fast))
            return [gr.update(value=x) for x in v["decoding_steps"]] + [
                gr.update(value=v["temperature"]), gr.update(value=v["top_p"]), gr.update(value=v["max_cfg_coef"]),
                gr.update(value=v["min_cfg_coef"]), gr.update(value=v.get("remask_noise", 0.0))]

        # the controls added after the first release go last, so that API clients that pass the first 17 keep working
        inputs = [model, prompts, span, device, fast, variations, seed, *steps, temperature, top_p, max_cfg, min_cfg,
                  prompt_audio, prompt_seconds, remask_noise, duration, loop, negative, audio_mode, region_start,
                  region_end, speed]
        generate.click(run, inputs, outputs, concurrency_limit=1, concurrency_id="generate", api_name="run")
        prompts.submit(run, inputs, outputs, concurrency_limit=1, concurrency_id="generate", api_visibility="private")
        stop.click(interrupt, None, status, queue=False, api_name="interrupt")
        model.change(model_defaults, [model, device, fast],  # loads the model: it says what it is
                     [*steps, temperature, top_p, max_cfg, min_cfg, remask_noise], concurrency_limit=1,
                     concurrency_id="generate", api_visibility="private")
    demo.queue(max_size=32)
    return demo
