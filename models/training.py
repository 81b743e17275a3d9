"""Train the keyword-spotting CNN with JAX + optax on the CPU, in minutes.

Why JAX: it installs from PyPI as a CPU wheel of a few hundred MB, where PyPI's ``torch``
resolves to the CUDA build with several GB of NVIDIA packages (see docs/models.md). Inference
never uses JAX: the trained parameters are exported to ONNX (:mod:`models.export`).

Recipe (what makes ~2,500 clips enough): per-epoch waveform augmentation (time shift, gain,
background noise from the training side's ``_silence_`` clips at a random SNR), SpecAugment
masks, label smoothing, AdamW with a warm-up + cosine learning rate, a jitted train step, and
batch-norm statistics re-estimated on clean training audio at the end. ``ensemble > 1`` trains
several members with different seeds and averages their probabilities (one ONNX graph).

Input is generic (:class:`models.dataset.LabelledWindows`): the real recordings' manifest, or
windows read back from the lake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from features import logmel_batch
from models.architecture import ArchitectureConfig, Params, State, apply, init
from models.augment import AugmentConfig, augment_waveforms, mixup, spec_augment
from models.dataset import LABELS, SILENCE, LabelledWindows
from models.embedding_head import HeadConfig
from models.epochs import EpochReport
from models.export import INPUT_NAME

EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs; :data:`PRESETS` names the ones the command line offers."""

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_epochs: float = 1.0
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    stem_channels: int = 32
    stages: tuple[tuple[int, int], ...] = ((64, 2), (96, 2), (128, 2))
    kernel: int = 9
    dropout: float = 0.2
    window_mean_norm: bool = False
    freq_channels: int = 0
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights (e.g. 0.998) and export it; 0: off."""
    ensemble: int = 1
    recalibrate_bn: bool = True
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def architecture(self, n_classes: int) -> ArchitectureConfig:
        return ArchitectureConfig(
            n_classes=n_classes,
            stem_channels=self.stem_channels,
            stages=self.stages,
            kernel=self.kernel,
            dropout=self.dropout,
            window_mean_norm=self.window_mean_norm,
            freq_channels=self.freq_channels,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, TrainConfig | HeadConfig] = {
    "quick": TrainConfig(epochs=8, stem_channels=16, stages=((32, 2), (48, 2)), learning_rate=5e-3),
    "full": TrainConfig(),
    "embedding": HeadConfig(),
}
"""``quick``: a small CNN in well under a minute (tests). ``full``: the CNN trained from scratch
(0.87 on unseen speakers, ~0.1 ms per window in INT8). ``embedding``: a linear classifier on
pretrained speech embeddings (:mod:`models.embedding_head`; 0.93 on unseen speakers, ~3.6 ms
of CPU per window) — the default."""


def preset(name: str, **overrides: Any) -> TrainConfig | HeadConfig:
    """A named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(base, HeadConfig) and given.pop("ensemble", 1) != 1:
        raise ValueError(
            f"the {name} preset trains one linear layer: --ensemble applies to quick and full"
        )
    return replace(base, **given)


@dataclass(frozen=True)
class MonitorSet:
    """Windows scored after every epoch for the learning curves; never used to choose a model."""

    logmel: np.ndarray
    """``[N, frames, mels]`` log-mel of the windows."""
    labels: np.ndarray
    """``[N]`` label indices."""


@dataclass
class TrainedModel:
    """Trained ensemble members (parameters + BN state) and how they were made."""

    architecture: ArchitectureConfig
    members: list[tuple[Params, State]]
    labels: tuple[str, ...]
    config: TrainConfig
    history: list[EpochReport]
    train_seconds: float
    n_train_windows: int

    input_kind = "logmel"
    """What its ONNX graph takes (the bundle manifest's ``input_kind``)."""
    input_name = INPUT_NAME

    def describe(self) -> dict[str, Any]:
        """The bundle manifest's ``architecture`` entry."""
        return {**self.architecture.to_dict(), "ensemble": len(self.members)}

    def save_onnx(self, path: Path) -> Path:
        """The FP32 graph ``logmel [B, frames, mels]`` → ``probs`` (every member averaged)."""
        from models.export import save_fp32

        return save_fp32(self.members, self.architecture, path)

    def predict_proba(self, logmel: np.ndarray) -> np.ndarray:
        """Mean member probabilities ``[B, n_labels]`` for log-mel ``[B, frames, mels]``."""
        return np.mean(
            [_predict(params, state, logmel, self.architecture) for params, state in self.members],
            axis=0,
        )


def _predict(
    params: Params, state: State, logmel: np.ndarray, arch: ArchitectureConfig
) -> np.ndarray:
    out = []
    for start in range(0, len(logmel), EVAL_BATCH):
        logits = _eval_logits(params, state, jnp.asarray(logmel[start : start + EVAL_BATCH]), arch)
        out.append(np.asarray(jax.nn.softmax(logits, axis=-1)))
    return np.concatenate(out) if out else np.zeros((0, arch.n_classes), np.float32)


@partial(jax.jit, static_argnums=3)
def _eval_logits(
    params: Params, state: State, logmel: jax.Array, arch: ArchitectureConfig
) -> jax.Array:
    return apply(params, state, logmel, arch, train=False)[0]


@partial(jax.jit, static_argnums=3)
def _batch_stats(
    params: Params, state: State, logmel: jax.Array, arch: ArchitectureConfig
) -> State:
    return apply(params, state, logmel, arch, train=True, bn_momentum=0.0)[1]


def _optimizer(weight_decay: float) -> optax.GradientTransformation:
    """AdamW without its learning rate: the step scales by the scheduled rate it is given."""
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay))


@lru_cache(maxsize=8)
def _train_step(
    arch: ArchitectureConfig, augment: AugmentConfig, weight_decay: float
) -> Callable[..., tuple[Params, Params, State, Any, jax.Array, jax.Array]]:
    """The jitted step, cached per shape so repeated runs in one process compile once.

    The learning rate is an argument (a traced scalar), not baked into the optimizer, so runs
    with different schedules share the compiled step.
    """
    optimizer = _optimizer(weight_decay)

    @jax.jit
    def step(params, ema, state, opt_state, logmel, targets, key, learning_rate, ema_decay):
        k_mask, k_mix, k_drop = jax.random.split(key, 3)
        if augment.time_masks or augment.freq_masks:
            logmel = spec_augment(k_mask, logmel, state["band_mean"], augment)
        if augment.mixup_alpha > 0:
            logmel, targets = mixup(k_mix, logmel, targets, augment.mixup_alpha)

        def loss_fn(p: Params) -> tuple[jax.Array, tuple[State, jax.Array]]:
            logits, new_state = apply(p, state, logmel, arch, train=True, dropout_key=k_drop)
            return optax.softmax_cross_entropy(logits, targets).mean(), (new_state, logits)

        (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree_util.tree_map(lambda u: -learning_rate * u, updates)
        params = optax.apply_updates(params, updates)
        ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == jnp.argmax(targets, axis=-1))
        return params, ema, new_state, opt_state, loss, correct

    return step


AUGMENT_CHUNK = 256
"""Windows augmented at a time: keeps temporaries in cache instead of paging in ~1 GB/epoch."""


def _augmented_logmel(
    windows: np.ndarray,
    is_silence: np.ndarray,
    noise_bank: np.ndarray,
    rng: np.random.Generator,
    config: TrainConfig,
) -> np.ndarray:
    """Log-mel ``[N, frames, mels]`` of a freshly augmented copy of every window."""
    out = None
    for start in range(0, len(windows), AUGMENT_CHUNK):
        rows = slice(start, start + AUGMENT_CHUNK)
        chunk = logmel_batch(
            augment_waveforms(windows[rows], is_silence[rows], noise_bank, rng, config.augment)
        )
        if out is None:
            out = np.empty((len(windows), *chunk.shape[1:]), dtype=np.float32)
        out[rows] = chunk
    assert out is not None
    return out


def _monitor_accuracy(
    params: Params, state: State, monitor: MonitorSet | None, arch: ArchitectureConfig
) -> float | None:
    """Accuracy on the monitoring set with the weights and BN statistics as they are now."""
    if monitor is None or not len(monitor.labels):
        return None
    predicted = _predict(params, state, monitor.logmel, arch).argmax(axis=1)
    return float(np.mean(predicted == monitor.labels))


def _recalibrate_bn(
    params: Params, state: State, logmel: np.ndarray, arch: ArchitectureConfig, batch: int
) -> State:
    """Population BN statistics from clean training audio (mean of per-batch statistics)."""
    stats = [
        _batch_stats(params, state, jnp.asarray(logmel[s : s + batch]), arch)
        for s in range(0, len(logmel) - batch + 1, batch)
    ]
    if not stats:
        return state
    averaged = jax.tree_util.tree_map(lambda *leaves: jnp.mean(jnp.stack(leaves), axis=0), *stats)
    return {**averaged, "band_mean": state["band_mean"], "band_scale": state["band_scale"]}


def train(
    data: LabelledWindows,
    config: TrainConfig,
    *,
    labels: tuple[str, ...] = LABELS,
    noise_bank: np.ndarray | None = None,
    monitor: MonitorSet | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainedModel:
    """Train ``config.ensemble`` networks on ``data`` (all of it: split before calling).

    ``noise_bank`` ``[K, samples]`` is the background noise mixed in; by default the
    ``_silence_`` windows of ``data``. ``monitor`` is scored after every epoch (its accuracy
    goes into the epoch's report, for learning curves; training never looks at it otherwise).
    ``on_epoch`` is called after every epoch (progress bars, step metrics).
    """
    if len(data) < config.batch_size:
        raise ValueError(f"{len(data)} windows is fewer than one batch of {config.batch_size}")
    started = time.perf_counter()
    is_silence = (
        data.labels == labels.index(SILENCE) if SILENCE in labels else np.zeros(len(data), bool)
    )
    if noise_bank is None:
        noise_bank = data.windows[is_silence]
    clean = logmel_batch(data.windows)
    band_mean = clean.mean(axis=(0, 1))
    band_std = clean.std(axis=(0, 1))
    arch = config.architecture(len(labels))
    steps_per_epoch = len(data) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=config.learning_rate * 1e-3,
    )
    learning_rates = np.asarray(jax.vmap(schedule)(jnp.arange(total_steps)), dtype=np.float32)
    optimizer = _optimizer(config.weight_decay)
    step = _train_step(arch, config.augment, config.weight_decay)
    n_classes = len(labels)
    smooth = config.label_smoothing
    targets_all = np.full((len(data), n_classes), smooth / n_classes, dtype=np.float32)
    targets_all[np.arange(len(data)), data.labels] += 1.0 - smooth

    members: list[tuple[Params, State]] = []
    history: list[EpochReport] = []
    for member in range(config.ensemble):
        seed = config.seed + 1000 * member
        rng = np.random.default_rng(seed)
        key = jax.random.PRNGKey(seed)
        key, init_key = jax.random.split(key)
        params, state = init(init_key, arch, band_mean, band_std)
        opt_state = optimizer.init(params)
        ema = params
        step_index = 0
        for epoch in range(config.epochs):
            epoch_started = time.perf_counter()
            features = _augmented_logmel(data.windows, is_silence, noise_bank, rng, config)
            order = rng.permutation(len(data))
            losses, corrects = [], []
            for batch in range(steps_per_epoch):
                rows = order[batch * config.batch_size : (batch + 1) * config.batch_size]
                key, step_key = jax.random.split(key)
                params, ema, state, opt_state, loss, correct = step(
                    params,
                    ema,
                    state,
                    opt_state,
                    features[rows],
                    targets_all[rows],
                    step_key,
                    learning_rates[step_index],
                    np.float32(min(config.ema_decay, (1 + step_index) / (10 + step_index))),
                )
                step_index += 1
                losses.append(loss)
                corrects.append(correct)
            report = EpochReport(
                member=member,
                epoch=epoch + 1,
                epochs=config.epochs,
                loss=float(np.mean(jax.device_get(losses))),
                seconds=time.perf_counter() - epoch_started,
                accuracy=float(np.sum(jax.device_get(corrects)))
                / (steps_per_epoch * config.batch_size),
                monitor_accuracy=_monitor_accuracy(params, state, monitor, arch),
            )
            history.append(report)
            if on_epoch is not None:
                on_epoch(report)
        if config.ema_decay > 0:
            params = ema  # its BN statistics are re-estimated below
        if config.recalibrate_bn or config.ema_decay > 0:
            state = _recalibrate_bn(params, state, clean, arch, EVAL_BATCH)
        members.append((jax.device_get(params), jax.device_get(state)))
    return TrainedModel(
        architecture=arch,
        members=members,
        labels=tuple(labels),
        config=config,
        history=history,
        train_seconds=time.perf_counter() - started,
        n_train_windows=len(data),
    )
