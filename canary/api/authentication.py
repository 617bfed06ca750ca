from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <token>``; its ``WWW-Authenticate`` makes a missing token a 401."""

    keyword = "Bearer"
