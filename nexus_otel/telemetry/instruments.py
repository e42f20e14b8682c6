"""The five contract instruments, created once per app from its meter."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter

from . import contract as c


@dataclass(frozen=True, slots=True)
class Instruments:
    """The contract's instruments; attributes are pre-built by their users."""

    workflow_duration: Histogram
    workflow_executions: Counter
    workflow_active: UpDownCounter
    hook_duration: Histogram
    plugin_errors: Counter

    @classmethod
    def create(cls, meter: Meter) -> "Instruments":
        def histogram(spec: c.MetricSpec) -> Histogram:
            return meter.create_histogram(
                spec.name, unit=spec.unit, description=spec.description,
                explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
            )

        def counter(spec: c.MetricSpec) -> Counter:
            return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)

        return cls(
            workflow_duration=histogram(c.WORKFLOW_DURATION),
            workflow_executions=counter(c.WORKFLOW_EXECUTIONS),
            workflow_active=meter.create_up_down_counter(
                c.WORKFLOW_ACTIVE.name, unit=c.WORKFLOW_ACTIVE.unit,
                description=c.WORKFLOW_ACTIVE.description,
            ),
            hook_duration=histogram(c.HOOK_DURATION),
            plugin_errors=counter(c.PLUGIN_ERRORS),
        )
