"""Configuration the product ships for deploying it: the nginx site that puts the Dagster UI behind a login."""

from importlib.resources import files

NGINX_SITE = "nginx-site.conf.j2"


def template_text(name: str) -> str:
    """The text of the shipped template ``name`` (a file of this package)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
