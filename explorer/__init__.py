"""The attnstore explorer: a Dash app over one store (`create_app`), served by `attnstore serve`."""

from explorer.app import create_app

__all__ = ["create_app"]
