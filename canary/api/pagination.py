from functools import cached_property, partial
from typing import Any

from django.core.paginator import Paginator
from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=&page_size=`` as the spec names them, capped so one request stays cheap."""

    page_size_query_param = "page_size"
    max_page_size = 1000


class CountedPaginator(Paginator):
    """A paginator told its total, for lists whose rows are counted elsewhere (rollups)
    faster than ``COUNT(*)`` over them."""

    def __init__(self, object_list: Any, per_page: int, *, count: int, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


def counted_pagination(total: int) -> PageNumberPagination:
    paginator = PageNumberPagination()
    paginator.django_paginator_class = partial(CountedPaginator, count=total)  # type: ignore[assignment]
    return paginator
