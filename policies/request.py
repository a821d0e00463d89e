"""Which level of assurance an authentication request needs, and how fresh it must be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from policies.levels import (
    INVALID_REQUEST,
    UNMET_AUTHENTICATION_REQUIREMENTS,
    Level,
    Reason,
    Refused,
    known_levels,
)


@dataclass(frozen=True)
class AcrClaimRequest:
    """The ``acr`` member of the ``claims`` parameter's ``id_token`` object (OIDC Core §5.5.1).

    ``values`` holds ``value`` or ``values``, in the order given.
    """

    values: tuple[str, ...]
    essential: bool = False


@dataclass(frozen=True)
class StepUpChallenge:
    """What a resource server's ``insufficient_user_authentication`` challenge asked for
    (RFC 9470 §3), passed back by the client in this authorization request (RFC 9470 §4)."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None


@dataclass(frozen=True)
class AuthnRequestFacts:
    """The parts of an authorization request that decide the level. ``requested_at`` is when
    the request reached cityid (aware, UTC): factors older than it are not fresh for
    ``prompt=login``."""

    requested_at: datetime
    scopes: frozenset[str] = frozenset()
    acr_values: tuple[str, ...] = ()
    acr_claim: AcrClaimRequest | None = None
    max_age: int | None = None
    prompt: frozenset[str] = frozenset()
    step_up: StepUpChallenge | None = None


@dataclass(frozen=True)
class ClientPolicy:
    client_id: str
    minimum_level: Level = Level.LOW
    default_max_age: int | None = None  # OIDC Registration §2 default_max_age


@dataclass(frozen=True)
class LevelDecision:
    """What the login flow must reach.

    - ``target``: the level to try for (includes voluntary wishes);
    - ``minimum``: below this the request is refused (client, scopes, essential acr, RFC 9470);
    - ``essential``: the client demanded specific acr values (essential claim or RFC 9470);
    - ``reportable``: if not empty, the reported ``acr`` must name one of these levels
      (OIDC Core §5.5.1.1); a stronger authentication satisfies a weaker class;
    - ``max_age``: seconds; factors older than that do not count (OIDC Core §3.1.2.1);
    - ``force_reauth``: only factors from after ``requested_at`` count (prompt=login);
    - ``honoured_acr``: the requested acr we will honour, None when we honour none;
    - ``refusal``: set when no authentication can satisfy the request.
    """

    target: Level
    minimum: Level
    essential: bool
    reportable: frozenset[Level]
    max_age: int | None
    force_reauth: bool
    requested_at: datetime
    prompt_none: bool
    honoured_acr: str | None
    reason: Reason
    refusal: Refused | None = None

    def acr_for(self, achieved: Level) -> str:
        """The acr to report for an authentication that reached ``achieved``."""
        allowed = [level for level in self.reportable if level <= achieved]
        # OIDC Core §5.5.1.1: an essential acr must match one of the requested values.
        return max(allowed).acr if allowed else achieved.acr


def _refuse(request: AuthnRequestFacts, client: ClientPolicy, error: str, reason: Reason) -> LevelDecision:
    return LevelDecision(
        target=client.minimum_level,
        minimum=client.minimum_level,
        essential=False,
        reportable=frozenset(),
        max_age=None,
        force_reauth=False,
        requested_at=request.requested_at,
        prompt_none=False,
        honoured_acr=None,
        reason=reason,
        refusal=Refused(error, reason),
    )


def _scope_floor(
    scopes: frozenset[str], client: ClientPolicy, scope_levels: Mapping[str, Level]
) -> tuple[Level, Reason]:
    floor = client.minimum_level
    reason = Reason("client_minimum", f"client {client.client_id} requires at least {floor.label}")
    for scope in sorted(scopes):
        level = scope_levels.get(scope)
        if level is not None and level > floor:
            floor = level
            reason = Reason("scope_requires_level", f"scope {scope} requires {level.label}")
    return floor, reason


def _max_age(request: AuthnRequestFacts, client: ClientPolicy) -> int | None:
    candidates = [request.max_age, client.default_max_age]
    if request.step_up is not None:
        candidates.append(request.step_up.max_age)  # RFC 9470 §4: max_age passed back
    present = [age for age in candidates if age is not None]
    # OIDC Core §3.1.2.1 / Registration §2: an explicit max_age overrides default_max_age, but
    # a stricter one never hurts; the smallest bound wins.
    return min(present) if present else None


def required_level(
    request: AuthnRequestFacts, client: ClientPolicy, scope_levels: Mapping[str, Level]
) -> LevelDecision:
    """Decide the level, freshness and acr reporting an authorization request needs."""
    # OIDC Core §3.1.2.1: prompt=none with any other value is an error.
    if "none" in request.prompt and len(request.prompt) > 1:
        return _refuse(
            request,
            client,
            INVALID_REQUEST,
            Reason("prompt_none_combined", "prompt=none may not be combined with other values"),
        )
    max_age = _max_age(request, client)
    if max_age is not None and max_age < 0:
        # OIDC Core §3.1.2.1: max_age is a number of seconds, so never negative.
        return _refuse(request, client, INVALID_REQUEST, Reason("max_age_negative", "max_age is negative"))

    minimum, reason = _scope_floor(request.scopes, client, scope_levels)
    reportable: frozenset[Level] | None = None

    claim = request.acr_claim
    if claim is not None and claim.essential:
        # OIDC Core §5.5.1.1: an essential acr must be met, else the authentication fails.
        wanted = known_levels(claim.values)
        if not wanted:
            return _refuse(
                request,
                client,
                UNMET_AUTHENTICATION_REQUIREMENTS,
                Reason("essential_acr_unknown", "none of the essential acr values is supported"),
            )
        reportable = frozenset(wanted)
        if min(wanted) > minimum:
            minimum = min(wanted)
            reason = Reason("essential_acr", f"the client demands {minimum.label} (essential)")

    if request.step_up is not None and request.step_up.acr_values:
        # RFC 9470 §3: the resource server accepts any of its acr_values; it has already
        # refused the weaker token, so falling short is pointless and treated as essential.
        wanted = known_levels(request.step_up.acr_values)
        if not wanted:
            return _refuse(
                request,
                client,
                UNMET_AUTHENTICATION_REQUIREMENTS,
                Reason("step_up_acr_unknown", "none of the resource server's acr values is supported"),
            )
        reportable = frozenset(wanted) if reportable is None else reportable & frozenset(wanted)
        if not reportable:
            return _refuse(
                request,
                client,
                UNMET_AUTHENTICATION_REQUIREMENTS,
                Reason("acr_conflict", "the essential acr and the step-up acr have no level in common"),
            )
        if min(reportable) > minimum:
            minimum = min(reportable)
            reason = Reason("step_up_challenge", f"the resource server demands {minimum.label}")

    # OIDC Core §3.1.2.1: acr_values are voluntary, in order of preference; unknown ones are
    # ignored. A non-essential acr claim is voluntary too (OIDC Core §5.5.1.1).
    voluntary = request.acr_values
    if not voluntary and claim is not None and not claim.essential:
        voluntary = claim.values
    preferred = known_levels(voluntary)[:1]
    if preferred and reportable and preferred[0] not in reportable:
        # OIDC Core §5.5.1.1: we could not report it anyway, so do not make the citizen work
        # for it.
        preferred = ()
    target = minimum
    if preferred and preferred[0] > minimum:
        target = preferred[0]
        reason = Reason("acr_values_preference", f"the client prefers {target.label}")
    elif preferred and preferred[0] < minimum:
        reason = Reason(
            "acr_values_below_minimum",
            f"the client asked for {preferred[0].label}, but {reason.text}",
        )

    decision = LevelDecision(
        target=target,
        minimum=minimum,
        essential=reportable is not None,
        reportable=reportable if reportable is not None else frozenset(),
        max_age=max_age,
        # OIDC Core §3.1.2.1: prompt=login forces reauthentication; max_age=0 is equivalent.
        force_reauth="login" in request.prompt or max_age == 0,
        requested_at=request.requested_at,
        prompt_none="none" in request.prompt,
        honoured_acr=None,
        reason=reason,
    )
    return replace(decision, honoured_acr=_honoured_acr(decision, request))


def _honoured_acr(decision: LevelDecision, request: AuthnRequestFacts) -> str | None:
    """The requested acr we will report once ``target`` is reached; None if we report one the
    client did not ask for (OIDC Core §3.1.2.1: best effort for voluntary acr_values)."""
    requested = set(request.acr_values)
    if request.acr_claim is not None:
        requested.update(request.acr_claim.values)
    if request.step_up is not None:
        requested.update(request.step_up.acr_values)
    acr = decision.acr_for(decision.target)
    return acr if acr in requested else None
