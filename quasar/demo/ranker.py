"""The multi-task second-pass ranker: embedding tables, then a DCN-v2 cross network beside a deep tower.

    x   = [member | item | author | mean(hashtags) | dense]     (remix.feature_spec.ranker_input layout)
    x0  = x * input_scale + input_shift                          (standardises the dense columns only)
    x_{l+1} = x0 * (W_l x_l + b_l) + x_l                         (cross layers, full-rank W_l)
    h   = relu(W_2 relu(W_1 x0 + b_1) + b_2)                     (deep tower)
    p   = sigmoid(W_h [x_L | h] + b_h)                           (one column per objective)

Everything after the embedding lookup is the "dense part" that serving runs on an engine; the tables go
to the key-value store. `export_weights` hands both out as numpy arrays under the names documented
there, so exporters (ONNX, TF SavedModel) rebuild the same function from the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from quasar.demo.interactions import roc_auc
from quasar.demo.layout import OBJECTIVES, ranker_input_dim

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RankerConfig:
    embedding_dim: int = 16
    cross_layers: int = 2
    deep_units: tuple[int, ...] = (64, 32)
    epochs: int = 2
    batch_size: int = 1024
    min_batches_per_epoch: int = 64  # small worlds take smaller batches so that the model still learns
    learning_rate: float = 1e-3
    threads: int = 2


@dataclass(frozen=True)
class RankerData:
    """Training rows: ids for the embedding lookups, hashtags padded with `n_hashtags`, raw dense features."""

    member_id: I64
    item_id: I64
    author_id: I64
    hashtags: I64  # (n, max_hashtags), padding value = n_hashtags
    dense: F32  # (n, len(DENSE_FEATURES)), raw
    labels: F32  # (n, len(OBJECTIVES))

    def __len__(self) -> int:
        return len(self.member_id)

    def take(self, rows: I64) -> RankerData:
        return RankerData(
            member_id=self.member_id[rows],
            item_id=self.item_id[rows],
            author_id=self.author_id[rows],
            hashtags=self.hashtags[rows],
            dense=self.dense[rows],
            labels=self.labels[rows],
        )


@dataclass(frozen=True)
class RankerReport:
    epochs: int
    steps: int
    batch_size: int
    train_rows: int
    heldout_rows: int
    epoch_loss: tuple[float, ...]
    heldout_loss: float
    heldout_auc: dict[str, float]
    positive_rate: dict[str, float]
    seconds: float


def pad_hashtags(flat: I64, indptr: I64, padding: int) -> I64:
    """CSR hashtag rows as a dense (n, max_len) matrix filled with `padding`."""
    counts = np.diff(indptr)
    width = max(int(counts.max(initial=0)), 1)
    out = np.full((len(counts), width), padding, dtype=np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.arange(len(flat)) - np.repeat(indptr[:-1], counts)
    out[rows, cols] = flat
    return out


def _linears(layers: nn.ModuleList) -> list[nn.Linear]:
    return [layer for layer in layers if isinstance(layer, nn.Linear)]


class MultiTaskRanker(nn.Module):
    input_scale: torch.Tensor
    input_shift: torch.Tensor

    def __init__(
        self, *, n_members: int, n_items: int, n_hashtags: int, dense_mean: F32, dense_std: F32, config: RankerConfig
    ) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.n_hashtags = n_hashtags
        self.member = nn.Embedding(n_members + 1, dim)
        self.item = nn.Embedding(n_items + 1, dim)
        self.author = nn.Embedding(n_members + 1, dim)
        # One extra row at index n_hashtags pads short hashtag lists; EmbeddingBag leaves it out of the mean.
        self.hashtag = nn.EmbeddingBag(n_hashtags + 1, dim, mode="mean", padding_idx=n_hashtags)
        for table in (self.member, self.item, self.author, self.hashtag):
            nn.init.normal_(table.weight, std=0.05)
        with torch.no_grad():
            self.hashtag.weight[n_hashtags].zero_()

        width = ranker_input_dim(dim)
        scale = np.ones(width, dtype=np.float32)
        shift = np.zeros(width, dtype=np.float32)
        std = np.where(dense_std > 1e-6, dense_std, 1.0).astype(np.float32)
        scale[4 * dim :] = 1.0 / std
        shift[4 * dim :] = -dense_mean / std
        self.register_buffer("input_scale", torch.from_numpy(scale))
        self.register_buffer("input_shift", torch.from_numpy(shift))

        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        for layer in _linears(self.cross):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        deep: list[nn.Module] = []
        fan_in = width
        for units in config.deep_units:
            deep.append(nn.Linear(fan_in, units))
            fan_in = units
        self.deep = nn.ModuleList(deep)
        self.head = nn.Linear(width + fan_in, len(OBJECTIVES))

    def embed(
        self, member_id: torch.Tensor, item_id: torch.Tensor, author_id: torch.Tensor, hashtags: torch.Tensor
    ) -> torch.Tensor:
        """The raw ranker input rows for a batch (what serving assembles from the store)."""
        return torch.cat(
            [self.member(member_id), self.item(item_id), self.author(author_id), self.hashtag(hashtags)], dim=1
        )

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The dense part: raw input rows (n, ranker_input_dim) to logits (n, len(OBJECTIVES))."""
        x0 = x * self.input_scale + self.input_shift
        xl = x0
        for layer in self.cross:
            xl = x0 * layer(xl) + xl
        h = x0
        for layer in self.deep:
            h = torch.relu(layer(h))
        logits: torch.Tensor = self.head(torch.cat([xl, h], dim=1))
        return logits

    def forward(
        self,
        member_id: torch.Tensor,
        item_id: torch.Tensor,
        author_id: torch.Tensor,
        hashtags: torch.Tensor,
        dense: torch.Tensor,
    ) -> torch.Tensor:
        x = torch.cat([self.embed(member_id, item_id, author_id, hashtags), dense], dim=1)
        return self.dense_logits(x)


def _tensors(data: RankerData) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(np.ascontiguousarray(data.member_id)),
        torch.from_numpy(np.ascontiguousarray(data.item_id)),
        torch.from_numpy(np.ascontiguousarray(data.author_id)),
        torch.from_numpy(np.ascontiguousarray(data.hashtags)),
        torch.from_numpy(np.ascontiguousarray(data.dense)),
    )


def predict(model: MultiTaskRanker, data: RankerData, *, batch_size: int = 8192) -> F32:
    """Probabilities (n, len(OBJECTIVES)) for the rows of `data`."""
    model.eval()
    inputs = _tensors(data)
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = [t[start : start + batch_size] for t in inputs]
            out.append(torch.sigmoid(model(*batch)).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.empty((0, len(OBJECTIVES)), np.float32)


def predict_dense(model: MultiTaskRanker, x: F32) -> F32:
    """Probabilities of the dense part alone, for raw ranker input rows (parity checks)."""
    model.eval()
    with torch.no_grad():
        return np.asarray(torch.sigmoid(model.dense_logits(torch.from_numpy(np.ascontiguousarray(x)))).numpy())


def ranker_inputs(model: MultiTaskRanker, data: RankerData) -> F32:
    """The raw ranker input rows the model sees for `data` (embeddings looked up, hashtags pooled)."""
    model.eval()
    member, item, author, hashtags, dense = _tensors(data)
    with torch.no_grad():
        return np.asarray(torch.cat([model.embed(member, item, author, hashtags), dense], dim=1).numpy())


def train_ranker(
    train: RankerData,
    heldout: RankerData,
    *,
    n_members: int,
    n_items: int,
    n_hashtags: int,
    seed: int,
    config: RankerConfig | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[MultiTaskRanker, RankerReport]:
    """Train the ranker with Adam on the sum of per-objective log losses (deterministic for a seed).

    `on_step(done, total)` is called after every optimiser step (progress display).
    """
    config = config or RankerConfig()
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    dense_mean = train.dense.mean(axis=0, dtype=np.float64).astype(np.float32)
    dense_std = train.dense.std(axis=0, dtype=np.float64).astype(np.float32)
    model = MultiTaskRanker(
        n_members=n_members,
        n_items=n_items,
        n_hashtags=n_hashtags,
        dense_mean=dense_mean,
        dense_std=dense_std,
        config=config,
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    inputs = _tensors(train)
    labels = torch.from_numpy(np.ascontiguousarray(train.labels))
    batch_size = min(config.batch_size, max(32, math.ceil(len(train) / config.min_batches_per_epoch)))
    batches = max(1, math.ceil(len(train) / batch_size))
    epochs = config.epochs
    total = epochs * batches
    shuffle = torch.Generator().manual_seed(seed)
    epoch_loss: list[float] = []
    step = 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        running = 0.0
        for b in range(batches):
            rows = order[b * batch_size : (b + 1) * batch_size]
            logits = model(*(t[rows] for t in inputs))
            loss = loss_fn(logits, labels[rows]) * len(OBJECTIVES)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            running += float(loss.detach()) * len(rows)
            step += 1
            if on_step is not None:
                on_step(step, total)
        epoch_loss.append(running / len(train))

    probabilities = predict(model, heldout)
    eps = 1e-7
    p = np.clip(probabilities.astype(np.float64), eps, 1 - eps)
    y = heldout.labels.astype(np.float64)
    heldout_loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0).sum()) if len(heldout) else 0.0
    report = RankerReport(
        epochs=epochs,
        steps=step,
        batch_size=batch_size,
        train_rows=len(train),
        heldout_rows=len(heldout),
        epoch_loss=tuple(epoch_loss),
        heldout_loss=heldout_loss,
        heldout_auc={name: roc_auc(heldout.labels[:, j], probabilities[:, j]) for j, name in enumerate(OBJECTIVES)},
        positive_rate={name: float(train.labels[:, j].mean()) for j, name in enumerate(OBJECTIVES)},
        seconds=time.perf_counter() - started,
    )
    return model, report


def export_weights(model: MultiTaskRanker) -> dict[str, F32]:
    """Every number of the model as float32 arrays; linear weights are (out, in): y = x @ W.T + b.

    Names: input_scale, input_shift (ranker_input_dim,); cross{i}_weight, cross{i}_bias;
    deep{i}_weight, deep{i}_bias; head_weight, head_bias; embedding_member, embedding_author
    (n_members + 1, dim; row 0 unused), embedding_item (n_items + 1, dim; row 0 unused),
    embedding_hashtag (n_hashtags, dim; hashtag ids index rows directly).
    """

    def array(t: torch.Tensor) -> F32:
        return np.ascontiguousarray(t.detach().numpy().astype(np.float32))

    weights: dict[str, F32] = {
        "input_scale": array(model.input_scale),
        "input_shift": array(model.input_shift),
    }
    for i, layer in enumerate(_linears(model.cross)):
        weights[f"cross{i}_weight"] = array(layer.weight)
        weights[f"cross{i}_bias"] = array(layer.bias)
    for i, layer in enumerate(_linears(model.deep)):
        weights[f"deep{i}_weight"] = array(layer.weight)
        weights[f"deep{i}_bias"] = array(layer.bias)
    weights["head_weight"] = array(model.head.weight)
    weights["head_bias"] = array(model.head.bias)
    weights["embedding_member"] = array(model.member.weight)
    weights["embedding_item"] = array(model.item.weight)
    weights["embedding_author"] = array(model.author.weight)
    weights["embedding_hashtag"] = array(model.hashtag.weight[: model.n_hashtags])
    return weights
