from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """The spec's paths have no trailing slash; clients that add one are served too."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
