# Copied by bench/compare.sh into the throw-away Django project: the same
# page mysite's GET / serves to a visitor without a session while ONLINE,
# as a constant, so both servers do the same work around the middleware.
from django.http import HttpResponse
from django.urls import path

PAGE = (
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mysite</title></head>\n"
    "<body>\n<h1>mysite</h1>\n<p id=\"who\">You are not logged in.</p>\n"
    "<form method=\"post\" action=\"/login\"><button id=\"login\">Log in</button></form>\n"
    "<ul id=\"notes\"></ul>\n"
    "<form method=\"post\" action=\"/notes\" id=\"note-form\"><input name=\"text\" id=\"note-text\">"
    "<button id=\"note\">Leave a note</button></form>\n</body></html>\n"
)


def home(request):
    return HttpResponse(PAGE, content_type="text/html; charset=utf-8")


urls = [path("", home)]
