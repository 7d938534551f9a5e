"""What a dbt build did: one build's result, a region's results, and the one-line failure message."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DbtBuildResult:
    """What one `dbt build` did."""

    models_built: list[str]
    tests_passed: int
    tests_failed: int
    gold_versions: dict[str, int]
    seconds: float
    success: bool
    failures: list[str] = field(default_factory=list)
    full_refresh: bool = False
    tenant_id: str | None = None  # the dedicated tenant built; None for the pooled build


@dataclass
class RegionBuildResult:
    """A region built in full: the pooled build (None without pooled bronze) and one per dedicated tenant."""

    region: str
    pooled: DbtBuildResult | None
    dedicated: dict[str, DbtBuildResult] = field(default_factory=dict)

    @property
    def builds(self) -> list[DbtBuildResult]:
        return [*([self.pooled] if self.pooled else []), *(self.dedicated[t] for t in sorted(self.dedicated))]

    @property
    def success(self) -> bool:
        return all(b.success for b in self.builds)

    @property
    def models_built(self) -> int:
        return sum(len(b.models_built) for b in self.builds)

    @property
    def tests_passed(self) -> int:
        return sum(b.tests_passed for b in self.builds)

    @property
    def tests_failed(self) -> int:
        return sum(b.tests_failed for b in self.builds)

    @property
    def failures(self) -> list[str]:
        return [f if b.tenant_id is None else f"tenants/{b.tenant_id}: {f}" for b in self.builds for f in b.failures]

    @property
    def gold_versions(self) -> dict[str, int]:
        """Gold table -> Delta version; a dedicated tenant's tables keyed `tenants/<tenant_id>/<table>`
        (their path under the region), so they never collide with the pooled ones."""
        versions = dict(self.pooled.gold_versions) if self.pooled else {}
        for tenant_id, build in self.dedicated.items():
            versions.update({f"tenants/{tenant_id}/{name}": v for name, v in build.gold_versions.items()})
        return versions


def failure_message(result: DbtBuildResult | RegionBuildResult) -> str:
    """The one-line error of a failed build: the first failure and how many more."""
    first = result.failures[0] if result.failures else "dbt reported a failure"
    more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
    return f"dbt build failed: {first}{more}"
