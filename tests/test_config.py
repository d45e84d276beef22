"""The configuration: every choice it names has its implementation, and settings that cannot act are refused."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import quick_config

from vaekit import VAE, TrainConfig, VaekitError, train
from vaekit.config import FIGURE_KINDS, LIKELIHOODS, OBJECTIVES, PRIORS, check_settings_apply, settings_given


def test_every_objective_named_has_its_cost():
    from vaekit import objectives

    assert sorted(objectives.OBJECTIVES) == sorted(OBJECTIVES)


def test_every_figure_kind_named_has_its_writer():
    from vaekit.plots import WRITERS

    assert sorted(WRITERS) == sorted(FIGURE_KINDS)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("prior", PRIORS)
def test_every_likelihood_and_prior_named_builds_and_scores(likelihood, prior):
    model = VAE([16, 8, 2], likelihood=likelihood, prior=prior, pseudo_inputs=3)
    x = torch.rand(4, 16)
    assert torch.isfinite(model.likelihood(model.posterior(x).rsample()).log_prob(x)).all()
    assert torch.isfinite(model.prior.log_prob(torch.zeros(2))).all()


def test_settings_given_are_those_away_from_their_defaults():
    assert settings_given(TrainConfig(lr=0.01, iwae_k=50, epochs=3)) == {"lr": 0.01, "epochs": 3}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"iwae_k": 5}, "--iwae-k applies to --objective iwae only"),
        ({"pseudo_inputs": 7, "prior": "standard"}, "--pseudo-inputs applies to --prior vamp only"),
        ({"lr_patience": 3}, "--lr-patience applies to --lr-schedule plateau only"),
        ({"lr_schedule": "plateau", "min_lr": 0.01}, "--min-lr (0.01) must be below --lr (0.001), or the rate never drops"),
    ],
)
def test_a_setting_that_cannot_act_is_refused(given, message):
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_settings_apply(given)
    check_settings_apply({})  # nothing given: nothing to refuse


def test_python_train_refuses_what_the_command_refuses_before_making_a_folder(digits, tmp_path):
    """A plateau schedule whose floor is above the rate never lowers it: from Python as from the command line."""
    for config in (quick_config(tmp_path, lr_schedule="plateau", min_lr=0.01), quick_config(tmp_path, iwae_k=5)):
        with pytest.raises(VaekitError, match="never drops|applies to --objective iwae only"):
            train(VAE([64, 8, 2]), digits, config)
    assert list(tmp_path.iterdir()) == []


def test_each_objective_takes_the_settings_it_names_and_no_others():
    """A setting an objective names but does not take (misspelt, say) fails at once, not by keeping its default."""
    import inspect

    from vaekit import objectives

    for cost, takes in objectives.OBJECTIVES.values():
        assert set(takes) == set(inspect.signature(cost).parameters) - {"model", "x"}


def test_config_json_is_written_whole_or_not_at_all(tmp_path):
    """write_json replaces the file (a link in its place included) rather than writing through it."""
    from vaekit.config import write_json

    other = tmp_path / "other.json"
    other.write_text("{}")
    link = tmp_path / "config.json"
    link.symlink_to(other)
    write_json(link, {"a": 1})
    assert other.read_text() == "{}" and not link.is_symlink() and json.loads(link.read_text()) == {"a": 1}
