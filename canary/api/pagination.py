from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=&page_size=`` as the spec names them, capped so one request stays cheap."""

    page_size_query_param = "page_size"
    max_page_size = 1000
