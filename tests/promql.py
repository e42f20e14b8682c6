"""PromQL as the tests read it: the metric names an expression selects, and a dashboard query as Grafana sends it."""

from __future__ import annotations

import re

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and numbers left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)                      # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)                     # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"\d[\w.]*|[A-Za-z_:][\w:]*", expr):
        token = match.group()
        if token[0].isdigit() or token.lower() in PROMQL_KEYWORDS:
            continue  # a number or duration, or an operator
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(token)
    return names


def fill_variables(expr: str, service: str) -> str:
    """A dashboard query as Grafana sends it, with every template variable at "All" (``.*``) but ``$service``."""
    out = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "5m")
    out = out.replace("$service", service)
    return re.sub(r"\$(?:\{)?[a-z_]+\}?", ".*", out)
