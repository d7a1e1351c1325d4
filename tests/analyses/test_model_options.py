"""One convention for the jobs' models (``analyses.model_options``): the same options give the same configuration,
hence the same cached run, in every job; the geometry jobs anneal beta over 50 epochs, ``reproduce`` over the
reference 200,000 updates."""

from __future__ import annotations

import pytest

from analyses import cohorts, kl_budget, local_vs_global, pia_geometry, pia_uplift, reproduce, sharing_radius
from analyses.model_options import (
    GEOMETRY_ANNEAL_EPOCHS,
    QUICK_MODELS,
    REFERENCE,
    model_config,
    validate_model_options,
)
from models.trainer import config_key

GEOMETRY_JOBS = (local_vs_global, kl_budget, sharing_radius, pia_geometry, cohorts)


def _args(job, *argv: str):
    return job.build_parser().parse_args(list(argv))


def _help(job) -> str:
    return " ".join(job.build_parser().format_help().split())


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_the_geometry_jobs_ask_for_the_same_models(rho):
    configs = [model_config(_args(job), rho=rho) for job in GEOMETRY_JOBS]
    assert len({config_key(c) for c in configs}) == 1
    full = configs[0]
    assert (full.model, full.epochs, full.anneal_epochs, full.hidden, full.latent_dim) == (
        "multvae",
        200,
        GEOMETRY_ANNEAL_EPOCHS,
        (600,),
        200,
    )
    # --quick: every job, reproduce included, trains the same tiny model
    quick = [model_config(_args(job, "--quick"), rho=rho) for job in (*GEOMETRY_JOBS, reproduce)]
    assert len({config_key(c) for c in quick}) == 1
    assert quick[0].epochs == QUICK_MODELS["multvae"]["epochs"] and quick[0].dataset == "synthetic"


def test_reproduce_keeps_the_reference_schedule_and_says_so():
    full = model_config(_args(reproduce), rho=0.5, schedule=REFERENCE)
    assert (full.epochs, full.anneal_epochs, full.anneal_steps, full.rho, full.pia) == (200, None, 200_000, 0.5, 0)
    assert config_key(full) != config_key(model_config(_args(pia_geometry), rho=0.5))
    # asked for explicitly, the geometry schedule gives the geometry jobs' model
    same = model_config(_args(reproduce, "--anneal-epochs", "50"), rho=0.5, schedule=REFERENCE)
    assert config_key(same) == config_key(model_config(_args(pia_geometry), rho=0.5))
    assert "default: the reference beta = min(cap, updates / 200,000) as published" in _help(reproduce)
    for job in GEOMETRY_JOBS:
        assert f"default: {GEOMETRY_ANNEAL_EPOCHS}, shared by the geometry jobs" in _help(job), job.__name__


def test_quick_sizes_yield_to_explicit_options():
    args = _args(pia_geometry, "--quick", "--model", "recvae", "--epochs", "2", "--anneal-epochs", "1")
    quick = model_config(args, model="recvae", rho=0.5, pia=0.3)
    assert (quick.epochs, quick.anneal_epochs, quick.latent_dim, quick.pia, quick.hidden) == (2, 1, 16, 0.3, (64,))
    dae = model_config(_args(reproduce, "--quick", "--anneal-epochs", "5"), model="multdae", rho=0.5)
    assert dae.anneal_epochs is None and dae.latent_dim == 64  # no KL term: no annealing in the cache key
    argv = ["--quick", "--hidden", "32,16", "--latent", "8", "--batch-size", "64", "--mask", "bernoulli"]
    c = model_config(_args(local_vs_global, *argv, "--train-seed", "3", "--seed", "9", "--heldout", "40"), rho=1.0)
    assert (c.hidden, c.latent_dim, c.batch_size, c.mask_mode, c.seed, c.heldout) == (
        (32, 16),
        8,
        64,
        "bernoulli",
        3,
        40,
    )
    assert isinstance(c.heldout, int) and model_config(_args(kl_budget, "--heldout", "0.1"), rho=1.0).heldout == 0.1
    # jobs without --train-seed train with --seed
    assert model_config(_args(cohorts, "--seed", "9"), rho=1.0).seed == 9


def test_validate_returns_the_dataset():
    assert validate_model_options(_args(kl_budget)) == "ml-1m"
    assert validate_model_options(_args(reproduce, "--quick")) == "synthetic"
    assert validate_model_options(_args(cohorts, "--quick", "--dataset", "ml-100k")) == "ml-100k"


@pytest.mark.parametrize(
    ("job", "argv", "needle"),
    [
        (reproduce, ["--rho", "0"], "--rho"),
        (local_vs_global, ["--rho", "1.5"], "--rho"),
        (pia_geometry, ["--lambda-a", "0"], "--lambda-a"),
        (sharing_radius, ["--beta-cap", "nan"], "--beta-cap"),
        (kl_budget, ["--epochs", "0"], "--epochs"),
        (cohorts, ["--anneal-epochs", "0"], "--anneal-epochs"),
        (local_vs_global, ["--seed", "-1"], "--seed"),
    ],
)
def test_bad_model_options_name_the_flag(job, argv, needle):
    with pytest.raises(ValueError, match=needle):
        validate_model_options(_args(job, *argv))


@pytest.mark.parametrize("value", ["-1", "1.9", "0.5", "inf", "nan"])
def test_bad_heldout_is_one_parser_line(value, capsys):
    """--heldout is checked by the dataset layer's own parser (models.data.heldout_option), as in models.data."""
    with pytest.raises(SystemExit) as exit_:
        reproduce.build_parser().parse_args(["--heldout", value])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: argument --heldout: ")


def test_impossible_configurations_name_the_field():
    with pytest.raises(ValueError, match="latent_dim"):
        model_config(_args(local_vs_global, "--latent", "0"), rho=1.0)


@pytest.mark.parametrize("job", [*GEOMETRY_JOBS, reproduce, pia_uplift])
def test_every_job_that_trains_takes_a_batch_size(job):
    """Small data needs a smaller batch (fewer than 10 updates an epoch otherwise): every training job's models."""

    def config_of(*argv):
        args = _args(job, *argv)
        if job is pia_uplift:  # one model job per seed (--seeds): the uplift job's own view of its options
            args = pia_uplift._seed_args(args, 0, "multvae")
        return model_config(args, rho=0.5)

    config = config_of("--batch-size", "64")
    assert config.batch_size == 64 and config_key(config) != config_key(config_of())
    assert "--batch-size" in _help(job)
