"""The policy registry: every PCP design pcpd compares, and what each one is.

``POLICIES`` is the one place that knows the policies: their names, in the
order reports and tables list them, and their traits (``PolicyTraits``).
Everything else asks it: config validation, the model spec (which record
size a policy runs on), the workers (which class implements it), results and
reports (which policies keep per-type PCPs), the command line (choices).

Two kinds of entry, one interface (``workers.policies.base.Policy``):

built in
    The policies shipped with pcpd are listed below, each with its traits and
    the class that implements it, named rather than imported, so that this
    module stays standard-library only: the config loader imports it and must
    not pull in numpy.  Adding one is its module under ``workers.policies``
    plus one ``PolicyTraits`` entry in ``BUILTIN``.
plug-ins
    Any installed distribution can add policies through the entry point
    group ``pcpd.policies``: ``NAME = "module:Class"``, where the class
    subclasses ``Policy``, sets ``name = NAME`` and declares its traits as
    ``TRAITS = PolicyTraits(...)`` (docs/policies.md has a complete example).
    Their names are found without importing anything; a plug-in's module is
    imported the first time its traits or its class are needed.

Why the built-ins are not entry points themselves: an entry point exists
only in an installed distribution's metadata, so a source checkout, or an
editable install made before a policy was added, would silently lose
built-in policies; and loading an entry point imports its module, which
for the built-ins means numpy in every config check.  The built-ins cannot
be shadowed: a plug-in that reuses a taken name is skipped, and said so.

Config files never execute code: they name a policy, and only installed
ones (built in or by an installed distribution) are names they may use.

``pcpd policies`` lists the registry, one line a policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import asdict, dataclass
from importlib import metadata

from pcpd.errors import UsageError
from pcpd.kernel import RECORD_BYTES, STRUCT_PAGE_BYTES

__all__ = ["PolicyTraits", "PolicyRegistry", "PluginError", "POLICIES", "BUILTIN", "BASELINE",
           "ENTRY_POINT_GROUP", "BUILTIN_SOURCE", "MEMDESC_DEFAULT_RECORD_BYTES", "policy_traits",
           "record_bytes_for", "policy_names", "PROPOSAL", "check_traits", "format_listing", "add_arguments",
           "command", "MEMDESC_BUDGETS", "run_label"]

# The memdesc stage the memdesc policies run on unless told otherwise: the
# 16-byte buddy-embedded page of the January 2024 proposal, whose buddy state
# still lives in the memmap.
MEMDESC_DEFAULT_RECORD_BYTES = 16

# policy.memdesc_high: the budget per-type PCPs run under (workers.policies.memdesc),
# the default first: one count and high per CPU, as legacy has, for fair comparisons.
MEMDESC_BUDGETS = ("shared", "per-type", "split")

ENTRY_POINT_GROUP = "pcpd.policies"
BUILTIN_SOURCE = "pcpd"             # PolicyTraits.source of the policies shipped with pcpd

# A policy name appears in file names, command lines, config files and metric
# labels: lower case, digits, '-', '_' and '.', starting with a letter or digit.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")


@dataclass(frozen=True)
class PolicyTraits:
    """What one policy is, as the rest of pcpd needs to know it."""

    name: str
    description: str               # one line, for listings
    memdesc: bool                  # pages carry memdesc words; descriptors come from the slab
    typed_pcps: bool               # one PCP per memdesc type (per-type figures apply)
    record_sizes: tuple[int, ...]  # struct page sizes the implementation can model
    default_record_bytes: int
    compound_reading: str = ""     # which reading of the compound proposal it is; "" for none
    implementation: str = ""       # "module:Class"; a plug-in's is its entry point's value
    source: str = BUILTIN_SOURCE   # the distribution that provides it

    def record_bytes(self, requested: int | None = None) -> int:
        """The struct page size this policy runs on when ``requested`` is asked for:
        that size if the policy models it, else (or for None) its default.

        So one config or command line can ask for a memdesc stage and still
        compare against today's kernel: an experiment runs legacy and compound
        on the 64-byte page whatever the config's record_bytes says.
        """
        return requested if requested in self.record_sizes else self.default_record_bytes


class PluginError(UsageError):
    """An installed plug-in policy that cannot be used: its module does not import,
    or what its entry point names is not a policy with valid traits."""


def check_traits(traits: PolicyTraits) -> None:
    """ValueError unless ``traits`` describe a policy pcpd can run."""
    if not _NAME.fullmatch(traits.name):
        raise ValueError(f"policy name {traits.name!r} is not lower-case letters, digits, '-', '_' or '.'")
    if not traits.description or "\n" in traits.description:
        raise ValueError(f"policy {traits.name!r}: the description must be one non-empty line")
    if not traits.record_sizes or not set(traits.record_sizes) <= set(RECORD_BYTES):
        raise ValueError(f"policy {traits.name!r}: record sizes {traits.record_sizes} are not among "
                         f"{', '.join(map(str, RECORD_BYTES))}")
    if traits.default_record_bytes not in traits.record_sizes:
        raise ValueError(f"policy {traits.name!r}: default record size {traits.default_record_bytes} "
                         f"is not one of its record sizes")
    if "\n" in traits.compound_reading:
        raise ValueError(f"policy {traits.name!r}: the compound reading must be one line")
    if traits.typed_pcps and not traits.memdesc:
        raise ValueError(f"policy {traits.name!r}: per-type PCPs are per memdesc type (memdesc must be true)")


# Largest first: the order the memdesc policies' messages have always listed them in.
_MEMDESC_RECORD_SIZES = RECORD_BYTES[::-1]
_PAGE64 = (STRUCT_PAGE_BYTES,)

# The policies shipped with pcpd, in the order reports list them: today's
# kernel and its variants, the compound proposal and its variants, the
# pageblock-owning PCP, then the memdesc stages.
BUILTIN: tuple[PolicyTraits, ...] = (
    PolicyTraits(
        "legacy", "today's kernel: the PCP takes all comers; compound blocks prep and undo every tail",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        implementation="workers.policies.struct_page:LegacyPolicy"),
    PolicyTraits(
        "legacy-tailmask", "legacy with each tail's compound_info a per-order mask (Shutsemau 2026): "
                           "the same tails written, by one identical fill",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        implementation="workers.policies.tailmask:TailMaskPolicy"),
    PolicyTraits(
        "compound", "only compound memory on PCP lists; tail work moves to refill and drain",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        compound_reading="eager prep at refill",
        implementation="workers.policies.struct_page:CompoundPolicy"),
    PolicyTraits(
        "compound-lazy", "compound, but a refill preps nothing: a block is prepped at its first "
                         "allocation, and only prepped blocks are undone at drain",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        compound_reading="lazy prep at first allocation",
        implementation="workers.policies.compound_variants:CompoundLazyPolicy"),
    PolicyTraits(
        "compound-contig", "compound, plus non-compound high-order frees kept on the PCP as "
                           "free_contig_range() puts them there (2026)",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        compound_reading="contig, eager prep at refill",
        implementation="workers.policies.compound_variants:CompoundContigPolicy"),
    PolicyTraits(
        "pcp-buddy", "the PCP claims whole pageblocks and splits them outside zone->lock; frees "
                     "route to the owning CPU (Weiner, van Riel 2026)",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        implementation="workers.policies.pcp_buddy:PcpBuddyPolicy"),
    PolicyTraits(
        "pcp-buddy-spb", "pcp-buddy whose pageblock claims steer by superpageblock: movable to the "
                         "fullest clean one, unmovable into tainted ones (van Riel 2026)",
        memdesc=False, typed_pcps=False, record_sizes=_PAGE64, default_record_bytes=STRUCT_PAGE_BYTES,
        implementation="workers.policies.pcp_buddy_spb:PcpBuddySpbPolicy"),
    PolicyTraits(
        "memdesc-pcpdesc", "memdescs without descriptor caching: slab round trip and memdesc words "
                           "set on every alloc and free",
        memdesc=True, typed_pcps=False, record_sizes=_MEMDESC_RECORD_SIZES,
        default_record_bytes=MEMDESC_DEFAULT_RECORD_BYTES,
        implementation="workers.policies.memdesc:MemdescPcpdescPolicy"),
    PolicyTraits(
        "memdesc", "one PCP per memdesc type; a freed folio keeps its descriptor, a hit skips the memmap",
        memdesc=True, typed_pcps=True, record_sizes=_MEMDESC_RECORD_SIZES,
        default_record_bytes=MEMDESC_DEFAULT_RECORD_BYTES,
        implementation="workers.policies.memdesc:MemdescPolicy"),
)


class PolicyRegistry(MutableMapping[str, PolicyTraits]):
    """Policy name -> traits: the built-ins, then the installed plug-ins.

    Iterating, ``len`` and ``in`` need only the names, which come from the
    installed distributions' metadata without importing anything.  Looking a
    plug-in up loads it (imports its module) once; one that fails to load
    raises ``PluginError`` there, and ``values()``/``items()`` leave it out
    (a policy that cannot be loaded is no policy to compare; ``pcpd
    policies`` reports it).  Plug-ins are discovered on first use, so a
    registry built before a distribution was installed does not see it.

    Setting and deleting entries is for tests (monkeypatching the registry).
    """

    def __init__(self, builtins: Iterable[PolicyTraits], group: str = ENTRY_POINT_GROUP) -> None:
        self._traits: dict[str, PolicyTraits] = {t.name: t for t in builtins}
        self._order: list[str] = list(self._traits)
        self._group = group
        self._plugins: dict[str, metadata.EntryPoint] | None = None    # None: not discovered yet
        self._broken: dict[str, PluginError] = {}
        self.skipped: list[str] = []          # entry points not registered, each with why

    # -- discovery ---------------------------------------------------------------
    def _discover(self) -> dict[str, metadata.EntryPoint]:
        if self._plugins is not None:
            return self._plugins
        self._plugins = {}
        # sorted, so the listing order does not depend on sys.path order
        for ep in sorted(metadata.entry_points(group=self._group), key=lambda e: (e.name, e.value)):
            source = _dist_name(ep)
            if not _NAME.fullmatch(ep.name):
                self.skipped.append(f"{ep.name!r} from {source}: not a valid policy name")
            elif ep.name in self._traits or ep.name in self._plugins:
                taken = self._traits[ep.name].source if ep.name in self._traits \
                    else _dist_name(self._plugins[ep.name])
                self.skipped.append(f"{ep.name!r} from {source}: the name is taken (by {taken})")
            else:
                self._plugins[ep.name] = ep
                self._order.append(ep.name)
        return self._plugins

    def _load(self, ep: metadata.EntryPoint) -> PolicyTraits:
        """Import a plug-in and read its traits, checking what the entry point names."""
        where = f"plug-in policy {ep.name!r} from {_dist_name(ep)}"
        try:
            found = ep.load()
        except Exception as err:    # whatever its import raises, the plug-in is unusable
            raise PluginError(f"{where}: cannot import {ep.value}: {type(err).__name__}: {err}") from err
        traits = getattr(found, "TRAITS", None)
        if not isinstance(traits, PolicyTraits):
            raise PluginError(f"{where}: {ep.value} has no TRAITS = PolicyTraits(...)")
        if traits.name != ep.name or getattr(found, "name", None) != ep.name:
            raise PluginError(f"{where}: {ep.value} calls itself {getattr(found, 'name', None)!r} "
                              f"(TRAITS.name {traits.name!r}), not {ep.name!r}")
        try:
            check_traits(traits)
        except ValueError as err:
            raise PluginError(f"{where}: {err}") from None
        return dataclasses.replace(traits, implementation=ep.value, source=_dist_name(ep))

    # -- the mapping ---------------------------------------------------------------
    def __getitem__(self, name: str) -> PolicyTraits:
        traits = self._traits.get(name)
        if traits is not None:
            return traits
        if name in self._broken:
            raise self._broken[name]
        ep = self._discover().get(name)
        if ep is None:
            raise KeyError(name)
        try:
            traits = self._load(ep)
        except PluginError as err:
            self._broken[name] = err
            raise
        self._traits[name] = traits
        return traits

    def __contains__(self, name: object) -> bool:
        return name in self._traits or (isinstance(name, str) and name in self._discover())

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(list(self._order))

    def __len__(self) -> int:
        self._discover()
        return len(self._order)

    def __setitem__(self, name: str, traits: PolicyTraits) -> None:
        if name not in self:
            self._order.append(name)
        self._traits[name] = traits
        self._broken.pop(name, None)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._order.remove(name)
        self._traits.pop(name, None)
        self._broken.pop(name, None)
        self._discover().pop(name, None)

    def usable(self) -> list[PolicyTraits]:
        """The traits of every policy that loads, in registry order."""
        out = []
        for name in self:
            try:
                out.append(self[name])
            except PluginError:
                pass
        return out

    def values(self):  # a list: broken plug-ins left out (class docstring)
        return self.usable()

    def items(self):
        return [(t.name, t) for t in self.usable()]

    def problems(self) -> list[str]:
        """Why each installed plug-in that cannot be loaded cannot be (loading every one)."""
        self.usable()
        return [str(err) for err in self._broken.values()]


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "an unknown distribution"


POLICIES = PolicyRegistry(BUILTIN)

# Today's kernel: reports compare the others with it, and a replay checks it against the trace.
BASELINE = "legacy"


def policy_traits(name: str) -> PolicyTraits:
    """The traits of a registered policy; ValueError for an unknown name (PluginError, a
    ValueError too, for an installed plug-in that cannot be loaded)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}") from None


def record_bytes_for(policy: str, requested: int | None = None) -> int:
    """The struct page size ``policy`` runs on when ``requested`` is asked for (see
    ``PolicyTraits.record_bytes``): the one rule every model source follows."""
    return policy_traits(policy).record_bytes(requested)


# The policies compared when a command or config names none: today's kernel and the
# January 2024 proposal's three designs.  Variants and other designs are asked for by
# name, so a default run, table or report keeps meaning the same as policies are added.
PROPOSAL: tuple[str, ...] = ("legacy", "compound", "memdesc-pcpdesc", "memdesc")


def policy_names(*, memdesc: bool | None = None, typed_pcps: bool | None = None) -> tuple[str, ...]:
    """Registered policy names, in registry order, optionally only those with a trait.

    Without a trait asked for, no plug-in is imported; with one, plug-ins that
    cannot be loaded are left out.
    """
    if memdesc is None and typed_pcps is None:
        return tuple(POLICIES)
    return tuple(t.name for t in POLICIES.usable()
                 if (memdesc is None or t.memdesc == memdesc)
                 and (typed_pcps is None or t.typed_pcps == typed_pcps))


def run_label(policy: str, memdesc_high: str) -> str:
    """A policy as a report names the run: with the budget its per-type PCPs ran under
    (``policy.memdesc_high``), or the compound reading it is; a name the registry does
    not know (an old record's), or cannot load, as it is."""
    try:
        traits = POLICIES[policy]
    except (KeyError, PluginError):
        return policy
    if traits.typed_pcps:
        return f"{policy} (budget {memdesc_high})"
    if traits.compound_reading:
        return f"{policy} ({traits.compound_reading})"
    return policy


# --- pcpd policies ------------------------------------------------------------

def format_listing() -> str:
    """One line a registered policy: name, record sizes (default), memdesc, per-type PCPs,
    where it comes from, description (with the compound reading it is, where it is one);
    a plug-in that cannot be loaded says so."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [("policy", "record bytes (default)", "memdesc", "per-type PCPs", "from", "description")]
    for name in POLICIES:
        try:
            t = POLICIES[name]
        except PluginError:
            rows.append((name, "-", "-", "-", "?", "cannot be loaded (see below)"))
            continue
        sizes = "/".join(map(str, sorted(t.record_sizes)))
        rows.append((t.name, f"{sizes} ({t.default_record_bytes})", yes(t.memdesc), yes(t.typed_pcps),
                     t.source, _description(t)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5]
                     for row in rows)


def _description(traits: PolicyTraits) -> str:
    """The listing's description: the policy's, and which reading of the compound proposal it is."""
    if traits.compound_reading:
        return f"{traits.description}; compound reading: {traits.compound_reading}"
    return traits.description


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the traits as a JSON list")


def command(args: argparse.Namespace) -> int:
    """List the registry; exit 1 if an installed plug-in cannot be loaded.

    Each such plug-in, and each entry point skipped (a name already taken),
    gets a line on stderr.
    """
    if args.json:
        print(json.dumps([asdict(t) for t in POLICIES.usable()], indent=2))
    else:
        print(format_listing())
    problems = POLICIES.problems()
    for line in problems + [f"skipped {why}" for why in POLICIES.skipped]:
        print(f"pcpd policies: {line}", file=sys.stderr)
    return 1 if problems else 0
