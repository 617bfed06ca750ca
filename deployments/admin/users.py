"""Users and API tokens: Admins manage them, never anyone more powerful than themselves."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from knox.admin import AuthTokenAdmin as KnoxAuthTokenAdmin
from knox.models import AuthToken
from rest_framework.authtoken.models import TokenProxy

from canary.roles import (
    grantable_groups,
    manageable_users,
    may_manage_user,
)


class RoleUserAdmin(UserAdmin):
    """Admins manage users, roles and tokens, but never anyone more powerful than themselves.

    Without this, the Admin role's ``change_user`` would let an Admin make
    themselves (or anyone) a superuser, set a superuser's password, or join a
    group holding more than the Admin holds. The rules are ``canary.roles``'s
    (``may_manage_user``, ``grantable_groups``); this class only applies them.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return readonly
        extra = ["is_superuser", "user_permissions"]
        if not request.user.is_staff:
            extra.append("is_staff")
        return (*readonly, *extra)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "groups":
            kwargs["queryset"] = grantable_groups(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ManagedTokenAdmin(KnoxAuthTokenAdmin):
    """API tokens: issued here (shown once), listed by prefix, revoked by deleting.

    Only a hash of each token is stored. Tokens only for users the editor may
    manage: a token is the user's whole power.
    """

    list_display = ("token_key", "user", "created", "expiry")
    list_display_links = ("token_key",)
    search_fields = ("token_key", "user__username")
    readonly_fields = ("token_key", "user", "created", "expiry")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request).select_related("user")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(user__in=manageable_users(request.user))

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "user":
            kwargs["queryset"] = manageable_users(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a token is issued or revoked, never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for token in queryset:
            token.delete()  # one by one: each deletion reaches the data plane's cache


admin.site.unregister(User)
admin.site.register(User, RoleUserAdmin)
admin.site.unregister(TokenProxy)  # the plain-text tokens' page: none are stored any more
admin.site.unregister(AuthToken)
admin.site.register(AuthToken, ManagedTokenAdmin)
