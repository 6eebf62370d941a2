"""A second product served by the same gateway with no Python of its own in the serving path: "jobs you may
be interested in". Its own entities (seeker, job, company), feature views and tables, an `ann` source over
job vectors, a `grpc` source (a CandidateService answering jobs posted at the seeker's connections), its own
first-pass model (XGBoost) and ranker (a two-head logistic model exported to ONNX), and its own workflow.

Built from the demo corpus's job items by `quasar world build` (with the feed); written as data only:
features/jobs.yaml, models/jobs_*.{ubj,onnx,signature.yaml}, workflows/jobs.yaml, engines/jobs.yaml and
the store tables below. Training assembles its inputs through `features.InputPlan`, as serving does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from quasar.demo.corpus import Corpus
from quasar.demo.tables import padded
from remix.steps.candidates import ItemType

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
Table = tuple[I64, np.ndarray]

FIRST_PASS_MODEL, RANKER_MODEL = "jobs_first_pass", "jobs_ranker"
CANDIDATE_SERVICE = "jobs_network"
DEFAULT_SERVICE_TARGET = "127.0.0.1:50061"
NETWORK_JOBS = 200
IMPRESSIONS_PER_SEEKER = 24
HEADS = ("apply", "save")
FIRST_PASS_INPUTS: tuple[str, ...] = ("job_topic_match", "company_is_connection", "job_log_applicants", "job_age_days")
RANKER_INPUTS: tuple[str, ...] = (
    *FIRST_PASS_INPUTS,
    "candidate.first_pass_score",
    "seeker_profile.activity",
    "seeker_profile.tenure_years",
    "company_log_jobs",
)
SEEKER_VIEWS: tuple[str, ...] = ("seeker_topics", "seeker_network", "seeker_profile")
WEIGHTS = {"apply": 1.0, "save": 0.3}
_OWNER = "jobs-marketplace"


def jobs_tables(corpus: Corpus, feed: dict[str, Table], *, reference_time_s: int) -> dict[str, Table]:
    """The jobs product's tables. `feed`: the feed's tables (the jobs product copies what it shares with
    the feed into tables of its own, as a second team would: the two never read each other's)."""
    members = np.arange(1, corpus.n_members + 1, dtype=np.int64)
    jobs = np.flatnonzero(np.asarray(corpus.item_type) == ItemType.JOB).astype(np.int64)
    jobs = jobs[jobs > 0]
    companies = np.asarray(corpus.item_author[jobs], np.int64)
    created = reference_time_s - np.round(np.asarray(corpus.item_age_hours[jobs], np.float64) * 3600.0).astype(np.int64)
    posted = np.bincount(companies, minlength=corpus.n_members + 1)
    member_features = feed["member_features"][1]
    # jobs posted at each member's connections, newest first: what the candidate service answers
    by_company = np.lexsort((np.asarray(corpus.item_age_hours[jobs]), companies))
    sorted_companies, sorted_jobs = companies[by_company], jobs[by_company]
    lists = []
    for member in members:
        connections = corpus.connections(int(member))
        lo, hi = np.searchsorted(sorted_companies, connections), np.searchsorted(sorted_companies, connections, "right")
        parts = [sorted_jobs[a:b] for a, b in zip(lo, hi, strict=True)]
        found: I64 = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
        lists.append(found[np.argsort(np.asarray(corpus.item_age_hours[found]), kind="stable")][:NETWORK_JOBS])
    return {
        "jobs_seeker_topics": (members, np.asarray(corpus.member_topics[members], np.float32)),
        "jobs_seeker_network": (members, feed["member_graph"][1]),
        "jobs_seeker_profile": (members, member_features[:, [0, 3]].astype(np.float32)),  # activity, tenure
        "jobs_meta": (jobs, np.column_stack([np.full(len(jobs), int(ItemType.JOB)), companies, created])),
        "jobs_stats": (jobs, np.asarray(corpus.item_popularity[jobs], np.float32).reshape(-1, 1)),
        "jobs_vectors": (jobs, np.asarray(corpus.item_topics[jobs], np.float32)),
        "jobs_company": (members, posted[members].astype(np.float32).reshape(-1, 1)),
        "jobs_network_lists": (members, padded(lists, NETWORK_JOBS)),
    }


def features_document(*, topic_dim: int, connections: int) -> dict[str, Any]:
    def view(name: str, entity: str, features: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "entity": entity,
            "table": f"jobs_{name.removeprefix('job_')}",
            "owner": _OWNER,
            "features": features,
            **extra,
        }

    return {
        "entities": [
            {"name": "seeker", "key": "request", "description": "the member looking at jobs"},
            {"name": "job", "key": "candidate", "description": "a job posting"},
            {"name": "company", "key": "job_meta.company_id", "description": "who posted the job"},
        ],
        "views": [
            {**view("seeker_topics", "seeker", [{"name": "vector", "shape": [topic_dim]}]), "tags": ["topics"]},
            {
                **view("seeker_network", "seeker", [{"name": "connections", "shape": [connections], "default": -1}]),
                "dtype": "int64",
                "tags": ["graph", "ids"],
            },
            {
                **view("seeker_profile", "seeker", [{"name": "activity"}, {"name": "tenure_years"}]),
                "tags": ["profile"],
                "description": "How active the seeker is and since when.",
            },
            {
                **view("job_meta", "job", [{"name": "type"}, {"name": "company_id"}, {"name": "created_at_s"}]),
                "table": "jobs_meta",
                "dtype": "int64",
                "tags": ["metadata"],
            },
            {**view("job_stats", "job", [{"name": "applicants"}]), "table": "jobs_stats", "tags": ["popularity"]},
            {
                **view("job_vectors", "job", [{"name": "vector", "shape": [topic_dim]}]),
                "table": "jobs_vectors",
                "tags": ["topics", "ann"],
                "description": "Job topic vectors: the ANN table of the similar-jobs source.",
            },
            {
                **view("company_stats", "company", [{"name": "jobs_posted"}]),
                "table": "jobs_company",
                "tags": ["company"],
            },
            {
                **view("seeker_network_jobs", "seeker", [{"name": "jobs", "shape": [NETWORK_JOBS], "default": -1}]),
                "table": "jobs_network_lists",
                "dtype": "int64",
                "tags": ["candidates", "ids"],
                "description": "Jobs posted at the seeker's connections (served by the candidate service).",
            },
        ],
        "derived": [
            {"name": "job_topic_match", "transform": "dot", "inputs": ["seeker_topics.vector", "job_vectors.vector"]},
            {
                "name": "company_is_connection",
                "transform": "contains",
                "inputs": ["seeker_network.connections", "job_meta.company_id"],
            },
            {"name": "job_log_applicants", "transform": "log1p", "inputs": ["job_stats.applicants"]},
            {"name": "job_age_days", "transform": "age", "inputs": ["job_meta.created_at_s"], "unit_s": 86400.0},
            {"name": "company_log_jobs", "transform": "log1p", "inputs": ["company_stats.jobs_posted"]},
        ],
    }


def signature_documents() -> dict[str, dict[str, Any]]:
    return {
        FIRST_PASS_MODEL: {
            "model": FIRST_PASS_MODEL,
            "candidate_entity": "job",
            "description": "XGBoost P(apply) of a job for a seeker.",
            "inputs": [{"name": "features", "features": list(FIRST_PASS_INPUTS)}],
            "outputs": [{"name": "score", "heads": ["apply"]}],
        },
        RANKER_MODEL: {
            "model": RANKER_MODEL,
            "candidate_entity": "job",
            "description": "Two-head logistic ranker: P(apply), P(save).",
            "inputs": [{"name": "features", "features": list(RANKER_INPUTS)}],
            "outputs": [{"name": "scores", "heads": list(HEADS)}],
        },
    }


def workflow_document() -> dict[str, Any]:
    source = {"item_type": "job_meta.type", "author": "job_meta.company_id", "timeout_s": 0.1, "fail_open": True}
    views = list(SEEKER_VIEWS)
    return copy.deepcopy(
        {
            "workflow": "jobs",
            "version": "2026.12.1",
            "timeout_s": 0.5,
            "description": "Jobs you may be interested in: similar jobs (ANN) and jobs at your network.",
            "steps": [
                {"type": "rewrite", "salt": "jobs"},
                {
                    "type": "features",
                    "timeout_s": 0.05,
                    "views": views,
                    "fallback": {"type": "features.defaults", "views": views},
                },
                {
                    "parallel": {
                        "name": "sources",
                        "branches": [
                            {
                                "type": "source.ann",
                                "name": "similar",
                                "query": "seeker_topics.vector",
                                "table": "jobs_vectors",
                                "model": FIRST_PASS_MODEL,
                                "limit": 150,
                                "retrieve": 300,
                                **source,
                            },
                            {
                                "type": "source.grpc",
                                "name": "network_jobs",
                                "service": CANDIDATE_SERVICE,
                                "model": FIRST_PASS_MODEL,
                                "limit": 100,
                                "retrieve": 200,
                                **source,
                            },
                        ],
                    }
                },
                {"type": "merge", "sources": ["network_jobs", "similar"], "max_candidates": 250},
                {
                    "type": "rank",
                    "timeout_s": 0.1,
                    "model": RANKER_MODEL,
                    "weights": WEIGHTS,
                    "fallback": {"type": "rank.first_pass_order"},
                },
                {"type": "blend", "max_per_author": 3},
            ],
        }
    )


def engines_document(service_target: str = DEFAULT_SERVICE_TARGET) -> dict[str, Any]:
    return {
        "engines": {
            "jobs_onnx": {"kind": "onnx", "models": {RANKER_MODEL: "models/jobs_ranker.onnx"}},
            "jobs_xgboost": {
                "kind": "xgboost",
                "models": {FIRST_PASS_MODEL: "models/jobs_first_pass.ubj"},
                "predictor": "compiled",
            },
        },
        "routes": {
            RANKER_MODEL: {"targets": [{"engine": "jobs_onnx", "model": RANKER_MODEL}]},
            FIRST_PASS_MODEL: {"targets": [{"engine": "jobs_xgboost", "model": FIRST_PASS_MODEL}]},
        },
        "candidate_services": {CANDIDATE_SERVICE: {"target": service_target, "connect_wait_s": 0.1}},
    }


def impressions(corpus: Corpus, tables: dict[str, Table], *, seed: int) -> tuple[I64, I64, np.ndarray]:
    """(seeker ids, job ids, labels (n, 2): apply, save) from a latent model of how seekers choose jobs:
    topic match, jobs at connections, popular and fresh jobs; save is a softer apply."""
    rng = np.random.default_rng([seed, 11])
    jobs = tables["jobs_vectors"][0]
    seekers = np.repeat(np.arange(1, corpus.n_members + 1, dtype=np.int64), IMPRESSIONS_PER_SEEKER)
    shown = rng.choice(jobs, size=len(seekers))
    network = tables["jobs_network_lists"][1]
    from_network = rng.random(len(seekers)) < 0.3
    rows = network[seekers - 1, rng.integers(0, 5, len(seekers))]
    shown = np.where(from_network & (rows >= 0), rows, shown)
    match = (np.asarray(corpus.member_topics[seekers]) * np.asarray(corpus.item_topics[shown])).sum(axis=1)
    company = np.asarray(corpus.item_author[shown])
    connected = np.array([company[i] in corpus.connections(int(s)) for i, s in enumerate(seekers)])
    popularity = np.log1p(np.asarray(corpus.item_popularity[shown], np.float64))
    age_days = np.asarray(corpus.item_age_hours[shown], np.float64) / 24.0
    activity = np.asarray(corpus.member_activity[seekers], np.float64)
    latent = 4.0 * match + 1.2 * connected + 0.25 * popularity - 0.15 * age_days + rng.normal(0, 0.5, len(seekers))
    apply = rng.random(len(seekers)) < 1 / (1 + np.exp(-(latent - 3.0)))
    save = rng.random(len(seekers)) < 1 / (1 + np.exp(-(0.7 * latent + activity - 2.0)))
    return seekers, shown, np.column_stack([apply, save]).astype(np.float32)


def train_logistic(
    x: F32, labels: np.ndarray, *, steps: int = 400, learning_rate: float = 0.5
) -> tuple[F32, F32, F32, F32]:
    """A two-head logistic model on standardised inputs by full-batch gradient descent (deterministic).
    Returns (mean, scale, weights (k, heads), bias (heads,)): p = sigmoid(((x - mean) / scale) @ w + b)."""
    mean = x.mean(axis=0).astype(np.float32)
    scale = np.maximum(x.std(axis=0), 1e-6).astype(np.float32)
    z = (x - mean) / scale
    w = np.zeros((x.shape[1], labels.shape[1]), np.float64)
    b = np.zeros(labels.shape[1], np.float64)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        grad = p - labels
        w -= learning_rate * (z.T @ grad) / len(z)
        b -= learning_rate * grad.mean(axis=0)
    return mean, scale, w.astype(np.float32), b.astype(np.float32)


def logistic_onnx(mean: F32, scale: F32, weights: F32, bias: F32, *, version: str) -> Any:
    """The logistic ranker as an ONNX graph: features [N, k] -> scores [N, heads] (standardised inside)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, heads = weights.shape
    initializers = [
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["standardised"]),
        helper.make_node("MatMul", ["standardised", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "jobs_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", heads])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quasar-demo")
    model.ir_version = 8
    helper.set_model_props(model, {"version": version, "heads": ",".join(HEADS)})
    onnx.checker.check_model(model)
    return model


def save_onnx(model: Any, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
