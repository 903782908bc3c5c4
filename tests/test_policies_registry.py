"""pcpd.policies (the registry), pcpd.spec (the one settings-to-model translation) and
``pcpd policies``: every registered policy is listed and runnable, and its traits, not
its name, decide the struct page size it runs on."""

import dataclasses
import json

import pytest

from pcpd import cli
from pcpd.config.schema import config_schema
from pcpd.config.settings import DEFAULT_SETTINGS
from pcpd.kernel import HIGH_BOUNDS_ERAS, RECORD_BYTES, STRUCT_PAGE_BYTES
from pcpd.model.sizing import PcpLimits
from pcpd.policies import (
    POLICIES,
    PROPOSAL,
    PolicyTraits,
    format_listing,
    policy_names,
    policy_traits,
    record_bytes_for,
)
from pcpd.spec import ModelSpec, pcp_knobs
from workers.cpu import CpuAllocator, SharedLocks, create_arena
from workers.policies import Policy, policy_class


def settings_with(policy: str, record_bytes: int):
    return dataclasses.replace(
        DEFAULT_SETTINGS, arena=dataclasses.replace(DEFAULT_SETTINGS.arena, record_bytes=record_bytes),
        policy=dataclasses.replace(DEFAULT_SETTINGS.policy, name=policy))


# -- the listing ----------------------------------------------------------------------

def test_listing_has_one_line_per_registered_policy(capsys):
    assert cli.main(["policies"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["policy", "record", "bytes"]
    assert [line.split()[0] for line in lines] == list(POLICIES)
    for line, traits in zip(lines, POLICIES.values()):
        sizes = "/".join(map(str, sorted(traits.record_sizes)))
        assert f"{sizes} ({traits.default_record_bytes})" in line
        reading = f"; compound reading: {traits.compound_reading}" if traits.compound_reading else ""
        assert line.endswith(traits.description + reading)
    compound = lines[list(POLICIES).index("compound")]
    assert compound.endswith("tail work moves to refill and drain; compound reading: eager prep at refill")


def test_listing_follows_the_registry(monkeypatch):
    extra = dataclasses.replace(POLICIES["compound"], name="compound-32", record_sizes=(64, 32),
                                description="a policy that exists only in this test")
    monkeypatch.setitem(POLICIES, extra.name, extra)
    assert format_listing().splitlines()[-1].split()[:5] == ["compound-32", "32/64", "(64)", "no", "no"]


def test_json_listing_round_trips_the_traits(capsys):
    assert cli.main(["policies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [PolicyTraits(**{**t, "record_sizes": tuple(t["record_sizes"])}) for t in listed] \
        == list(POLICIES.values())


# -- the registry ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(POLICIES))
def test_every_registered_policy_has_its_class(name):
    cls = policy_class(name)
    assert issubclass(cls, Policy) and cls.name == name and cls.traits() is POLICIES[name]


@pytest.mark.parametrize("name", list(POLICIES))
def test_traits_are_consistent(name):
    traits = POLICIES[name]
    assert traits.name == name and traits.description and "\n" not in traits.description
    assert traits.default_record_bytes in traits.record_sizes
    assert set(traits.record_sizes) <= set(RECORD_BYTES)
    assert not traits.typed_pcps or traits.memdesc       # per-type PCPs are per memdesc type


def test_a_registry_entry_naming_another_class_is_refused(monkeypatch):
    wrong = dataclasses.replace(POLICIES["compound"], implementation="workers.policies.struct_page:LegacyPolicy")
    monkeypatch.setitem(POLICIES, "compound", wrong)
    policy_class.cache_clear()
    try:
        with pytest.raises(TypeError, match="not a Policy called 'compound'"):
            policy_class("compound")
    finally:
        monkeypatch.undo()
        policy_class.cache_clear()


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy 'slub'; expected one of legacy, legacy-tailmask, "):
        policy_traits("slub")


def test_trait_queries():
    assert policy_names(memdesc=False) == ("legacy", "legacy-tailmask", "compound", "compound-lazy",
                                           "compound-contig", "pcp-buddy", "pcp-buddy-spb")
    assert policy_names(memdesc=True) == ("memdesc-pcpdesc", "memdesc")
    assert policy_names(typed_pcps=True) == ("memdesc",)
    assert policy_names() == tuple(POLICIES)


def test_config_offers_exactly_the_registered_policies():
    properties = config_schema()["properties"]
    assert properties["policy"]["properties"]["name"]["enum"] == list(POLICIES)
    assert properties["experiment"]["properties"]["policies"]["items"]["enum"] == list(POLICIES)


# -- traits decide the struct page size -------------------------------------------------

@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("asked", RECORD_BYTES)
def test_every_source_runs_a_policy_on_the_size_its_traits_allow(name, asked):
    traits = POLICIES[name]
    expect = asked if asked in traits.record_sizes else traits.default_record_bytes
    assert record_bytes_for(name, asked) == expect
    specs = (ModelSpec.from_settings(settings_with(name, asked), ncpus=1),
             ModelSpec.from_reference_zone(name, "6.7", asked, pages=2048, managed=458752, low_wmark=7840,
                                           ncpus=2),
             ModelSpec.from_zoneinfo(name, "6.7", asked, pages=2048, ncpus=2, nsplit=2, limits=None))
    assert [s.record_bytes for s in specs] == [expect] * 3
    assert all(s.memdesc == traits.memdesc for s in specs)


def test_struct_page_policies_keep_todays_page_whatever_is_asked():
    assert record_bytes_for("legacy", 8) == record_bytes_for("compound", 16) == STRUCT_PAGE_BYTES
    assert record_bytes_for("memdesc", 8) == 8
    assert record_bytes_for("memdesc") == 16 and record_bytes_for("legacy") == STRUCT_PAGE_BYTES


def test_changed_traits_change_the_record_size(monkeypatch):
    """The rule reads the traits, not the policy's name: give compound a 32-byte page."""
    monkeypatch.setitem(POLICIES, "compound", dataclasses.replace(POLICIES["compound"], record_sizes=(64, 32)))
    assert ModelSpec.from_settings(settings_with("compound", 32), ncpus=1).record_bytes == 32
    assert ModelSpec.from_settings(settings_with("compound", 16), ncpus=1).record_bytes == 64
    monkeypatch.setitem(POLICIES, "memdesc", dataclasses.replace(POLICIES["memdesc"], record_sizes=(8, 16)))
    assert record_bytes_for("memdesc", 32) == 16 and record_bytes_for("memdesc", 8) == 8


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_policy_refuses_a_page_its_traits_do_not_list(name):
    traits = POLICIES[name]
    other = next((r for r in RECORD_BYTES if r not in traits.record_sizes), None)
    if other is None:
        pytest.skip(f"{name} models every record size")
    arena = create_arena(ModelSpec(pages=512, record_bytes=other, policy=name))
    try:
        with pytest.raises(ValueError, match=f"policy {name} needs a struct page of"):
            CpuAllocator(arena, ModelSpec(pages=512, record_bytes=other, policy=name), SharedLocks.local(), 0)
    finally:
        arena.close()
        arena.unlink()


# -- the era's PCP limits --------------------------------------------------------------

@pytest.mark.parametrize("era", ["4.18", "5.13", "5.14", "6.7"])
def test_one_rule_for_an_eras_pcp_limits(era):
    knobs = pcp_knobs(era, 63, 266, 300, 400)
    if era in HIGH_BOUNDS_ERAS:
        assert (knobs.batch, knobs.high, knobs.high_min, knobs.high_max) == (63, 0, 300, 400)
    else:
        assert (knobs.batch, knobs.high, knobs.high_min, knobs.high_max) == (63, 266, 0, 0)


@pytest.mark.parametrize("era", ["5.14", "6.7"])
def test_pinned_limits_are_the_models_limits(era):
    limits = PcpLimits(63, 266, 266, 266)
    spec = ModelSpec.from_zoneinfo("legacy", era, None, pages=425984, ncpus=2, nsplit=2, limits=limits)
    assert spec.limits() == limits


def test_the_default_comparison_is_the_proposal_whatever_else_is_registered():
    """Commands and configs that name no policies compare today's kernel with the January 2024
    proposal's designs; variants and other designs join only when named."""
    assert PROPOSAL == ("legacy", "compound", "memdesc-pcpdesc", "memdesc")
    assert set(PROPOSAL) < set(POLICIES)
    assert DEFAULT_SETTINGS.experiment.policies == PROPOSAL
