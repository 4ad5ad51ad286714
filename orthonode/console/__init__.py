"""The operator console: server-rendered pages, a REST API with its OpenAPI schema, and ``/metrics``.

Served by ``orthonode serve`` on ``web_host:web_port`` (loopback by default). Everything reads the index
through :mod:`orthonode.index.reads`; the only writes are the operator actions of
:mod:`orthonode.index.operator` (retry, discard), which need the ``web_token``.

* :mod:`orthonode.console.app` -- the FastAPI application and what it holds (:class:`ConsoleContext`);
* :mod:`orthonode.console.api` -- ``/api/v1``: JSON for scripts and the pages;
* :mod:`orthonode.console.pages` -- the HTML pages (Jinja2 templates, no front-end build step);
* :mod:`orthonode.console.auth` -- the token check (``Authorization: Bearer`` or the session cookie);
* :mod:`orthonode.console.collector` -- index state as Prometheus gauges at scrape time;
* :mod:`orthonode.console.render` -- a stored Secondary Capture key image as PNG;
* :mod:`orthonode.console.server` -- uvicorn in a thread of the serving process;
* :mod:`orthonode.console.watch` -- ``orthonode status --watch`` (rich).
"""
