"""``TFGPipeline``: a diffusers pipeline that samples with training-free guidance (and CFG).

A ``DiffusionPipeline`` of a denoiser (``unet``: ``UNet2DModel``, ``UNet2DConditionModel``, a
class-conditional ``UNet2DModel``), its ``scheduler``, and optionally a ``vae`` (latent models),
``text_encoder`` + ``tokenizer`` (text-conditional models). It loads any ``save_pretrained`` folder
with these components (a Stable Diffusion folder too: its other components are left out), the
bundled tasks' weight folders, and its own ``save_pretrained`` output, safetensors only.

Calling it samples with :func:`tfg_search.guidance.latent.sample_and_decode`, the one path of the
service's evaluation (docs/algorithm.md, sections 2 and 7): on the same seed, device, dtype, batch
and threads it gives the samples ``tfg-search sample`` gives, bit for bit. The guidance target is a
``predictor``: decoded images in [-1, 1], ``[B, C, H, W]`` -> log f ``[B]``, differentiable.

Example:
    >>> from tfg_search import TFGConfig, TFGPipeline                    # doctest: +SKIP
    >>> pipe = TFGPipeline.from_pretrained("tasks/weights/shapes")      # doctest: +SKIP
    >>> out = pipe(predictor=my_log_f, tfg_config=TFGConfig.from_pretrained("answer"),
    ...            num_images_per_prompt=8, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> out.images[0].save("0.png")                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import is_accelerate_available

from tfg_search.guidance.conditioning import Conditioning
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.config_file import CONFIG_NAME
from tfg_search.guidance.latent import LatentDecoder, sample_and_decode
from tfg_search.pipelines.prompts import encode_prompt

Predictor = Callable[[torch.Tensor], torch.Tensor]
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class TFGPipeline(DiffusionPipeline):
    """Training-free guidance of a diffusers denoiser toward a predictor's target.

    Args:
        unet: the denoiser (called as ``unet(x, t, **condition)``).
        scheduler: its noise schedule; sampling runs on the DDIM chain of its config (a DDPM or
            other scheduler is turned into a ``DDIMScheduler`` with ``from_config``).
        vae: a latent model's autoencoder (the chain runs on latents, the predictor sees images).
        text_encoder, tokenizer: a text-conditional model's prompt encoder (as Stable Diffusion's).

    Attributes:
        tfg_config: the configuration a call uses when given none: the folder's
            ``tfg_config.json`` when :meth:`from_pretrained` found one, else None.
    """

    _optional_components: ClassVar[list[str]] = ["vae", "text_encoder", "tokenizer"]
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        vae: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
        )
        self.tfg_config: TFGConfig | None = None
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> TFGPipeline:
        """Load a pipeline folder (``model_index.json`` with ``unet/``, ``scheduler/`` and the
        optional components) with safetensors weights only (``use_safetensors=True`` unless given);
        a ``tfg_config.json`` in the folder becomes :attr:`tfg_config`. Other components of the
        folder (a safety checker, a feature extractor) are not loaded.
        """
        kwargs.setdefault("use_safetensors", True)
        if not is_accelerate_available():  # diffusers would warn that it falls back to this
            kwargs.setdefault("low_cpu_mem_usage", False)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        config_file = Path(pretrained_model_name_or_path) / CONFIG_NAME
        if config_file.is_file():
            pipe.tfg_config = TFGConfig.from_pretrained(config_file)
        return pipe

    # -- conditioning ------------------------------------------------------------------------
    def encode_prompt(
        self, prompt: str | list[str], negative_prompt: str | list[str] | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings, negative prompt embeddings) ``[P, L, D]``, as Stable Diffusion's
        pipeline encodes them (:func:`tfg_search.pipelines.prompts.encode_prompt`, which the
        ``custom`` task calls too): padded to the tokenizer's ``model_max_length``, truncated, the
        empty prompt as the default negative prompt, in the text encoder's dtype."""
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError("a prompt needs a pipeline with a text_encoder and a tokenizer")
        return encode_prompt(self.tokenizer, self.text_encoder, prompt, negative_prompt, device)

    def conditioning(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        class_labels: int | Sequence[int] | torch.Tensor | None,
        negative_class_labels: int | Sequence[int] | torch.Tensor | None,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> tuple[Conditioning | None, int]:
        """The sampler's :class:`Conditioning` of a call and its batch size (prompts or labels x
        ``num_images_per_prompt``; one condition repeated for each image of it, as diffusers'
        pipelines order them)."""
        if prompt is not None and class_labels is not None:
            raise ValueError("give a prompt or class labels, not both")
        if prompt is not None:
            cond, uncond = self.encode_prompt(prompt, negative_prompt, device)
            key = "encoder_hidden_states"
        elif class_labels is not None:
            cond = _labels(class_labels, device)
            if negative_class_labels is None:
                classes = getattr(self.unet.config, "num_class_embeds", None)
                if not classes:
                    raise ValueError("class_labels need a class-conditional unet (num_class_embeds)")
                negative_class_labels = classes - 1  # the null class of label-dropout training
            uncond = _labels(negative_class_labels, device).expand(cond.shape[0])
            key = "class_labels"
        else:
            return None, num_images_per_prompt
        if cond.shape[0] == 1:  # one condition for every image: broadcast
            return Conditioning({key: cond}, {key: uncond[:1]}), num_images_per_prompt
        repeat = num_images_per_prompt
        conditioning = Conditioning(
            {key: cond.repeat_interleave(repeat, dim=0)}, {key: uncond.repeat_interleave(repeat, dim=0)}
        )
        return conditioning, cond.shape[0] * repeat

    # -- sampling ----------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample of the chain: (channels, *size) of the unet's config (a latent's for a VAE)."""
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), *size)

    def __call__(
        self,
        predictor: Predictor | None = None,
        tfg_config: TFGConfig | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        negative_class_labels: int | Sequence[int] | torch.Tensor | None = None,
        gradient_checkpointing: bool = False,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Sample with TFG toward ``predictor`` (and CFG toward the prompt or class).

        Args:
            predictor: images ``[B, C, H, W]`` in [-1, 1] -> log f ``[B]`` (differentiable); None
                samples without TFG (the config's strengths must then be 0).
            tfg_config: the guidance configuration; default :attr:`tfg_config`, else all strengths
                0 (with ``clip_x0`` on for pixel models, off for latent ones).
            prompt, negative_prompt: a text-conditional model's prompt(s); the negative prompt is
                the unconditional branch of CFG ("" by default).
            class_labels, negative_class_labels: a class-conditional model's class(es) and the
                unconditional branch's class (default: the last class embedding, the null class
                of label-dropout training).
            guidance_scale: the CFG weight; None takes the config's.
            num_inference_steps: DDIM steps.
            generator: the source of every random draw (one ``torch.Generator``).
            num_images_per_prompt: images per prompt (or per class label; without a condition,
                the batch size).
            latents: x_T ``[B, *sample_shape]``; drawn from ``generator`` when omitted.
            output_type: "pil", "np", "pt" (images in [0, 1], as diffusers' pipelines) or "latent"
                (the sampler's raw output: latents of a latent model, [-1, 1] images otherwise).
            return_dict: an ``ImagePipelineOutput`` (else a tuple of the images).
            gradient_checkpointing: recompute the VAE decode in the backward pass of the
                predictor's gradient (less memory, same samples; latent models).

        Raises:
            NonFiniteSampleError: the samples became NaN or infinite.
            ValueError: bad arguments (each message says which).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if isinstance(generator, (list, tuple)):
            raise ValueError("give one torch.Generator (it draws for the whole batch)")
        config = tfg_config or self.tfg_config or TFGConfig(clip_x0=self.vae is None)
        if guidance_scale is not None:
            config = config.replace(guidance_scale=guidance_scale)
        if predictor is None and config.guided:
            raise ValueError("a configuration with guidance strengths needs a predictor (images -> log f)")
        device = self.device
        conditioning, batch = self.conditioning(
            prompt, negative_prompt, class_labels, negative_class_labels, num_images_per_prompt, device
        )
        decoder = None if self.vae is None else LatentDecoder(self.vae, checkpointing=gradient_checkpointing)
        pixel_log_f = predictor if predictor is not None else _zero_log_f
        log_f = pixel_log_f if decoder is None else decoder.log_f(pixel_log_f)
        scheduler = self.scheduler
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        samples, errors = sample_and_decode(
            self.unet,
            scheduler,
            log_f,
            [config],
            (batch, *self.sample_shape),
            [generator],
            num_inference_steps,
            device,
            conditioning=conditioning,
            decoder=None if output_type == "latent" else decoder,
            latents=latents,
        )
        if errors[0] is not None:
            raise errors[0]
        images = samples[0]
        if output_type != "latent":
            images = self.image_processor.postprocess(images.detach(), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def _labels(value: int | Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(value, dtype=torch.long, device=device)
    return labels.reshape(-1)


def _zero_log_f(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
