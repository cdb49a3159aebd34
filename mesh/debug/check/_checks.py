"""The categories of `mesh check`, in the order they run.

The checkers of each category are wired to the real world in ``_checks_host``
(environment, ca), ``_checks_control`` (control plane, store, discovery) and
``_checks_traffic`` (data plane, policy, gateway). Checkers are closures over
one ``CheckContext`` (``_context``), which also carries what earlier checks
learned (the controller's address, its health and status) to later ones. The
verdicts are the pure functions of ``_rules``.
"""

from __future__ import annotations

from mesh.debug.check._checks_control import (
    control_plane_checkers,
    discovery_checkers,
    store_checkers,
)
from mesh.debug.check._checks_host import ca_checkers, environment_checkers
from mesh.debug.check._checks_traffic import data_plane_checkers, gateway_checkers, policy_checkers
from mesh.debug.check._context import (
    CA,
    CONTROL_PLANE,
    DATA_PLANE,
    DISCOVERY,
    ENVIRONMENT,
    GATEWAY,
    POLICY,
    STORE,
    CheckContext,
)
from mesh.debug.check._model import Category
from mesh.home import MeshHome

# -- all together --------------------------------------------------------------------


def build_categories(
    home: MeshHome, *, pre: bool = False, proxy: bool = False, context: CheckContext | None = None
) -> list[Category]:
    """The categories of `mesh check` in the order they run.

    ``--pre`` (before `mesh up`): the environment only, with the port and PATH
    checks. Otherwise: environment, ca, control plane, store, discovery, the data
    plane with ``--proxy``, policy, and the certificates the gateways serve.
    """
    ctx = context or CheckContext(home, pre=pre, proxy=proxy)
    categories = [Category(ENVIRONMENT, lambda: environment_checkers(ctx))]
    if pre:
        return categories
    categories += [
        Category(CA, lambda: ca_checkers(ctx), needs=(ENVIRONMENT,)),
        Category(CONTROL_PLANE, lambda: control_plane_checkers(ctx), needs=(ENVIRONMENT,)),
        Category(STORE, lambda: store_checkers(ctx), needs=(CONTROL_PLANE,)),
        Category(DISCOVERY, lambda: discovery_checkers(ctx), needs=(ENVIRONMENT,)),
    ]
    if proxy:
        categories.append(Category(DATA_PLANE, lambda: data_plane_checkers(ctx), needs=(CONTROL_PLANE,)))
    categories.append(Category(POLICY, lambda: policy_checkers(ctx), needs=(CONTROL_PLANE,)))
    categories.append(Category(GATEWAY, lambda: gateway_checkers(ctx), needs=(CONTROL_PLANE,)))
    return categories
