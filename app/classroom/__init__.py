"""Classrooms: an assistant projects the lesson, students follow it live on their phones.

The assistant creates a class and gets a short join code. Their control is bound to their
browser by a secret (an unguessable token in an HttpOnly cookie named after the class; the
store keeps only its SHA-256), never by the code, which everyone in the room can read.
Students join with the code, no account: their browser session id (app/session.py) names
them inside the class.

The package:

- ``room``: what a class holds (``Room``: the page the assistant shows, the students, at
  most one quick question with the students' answers) and its JSON form;
- ``store``: where classes live, ``ClassStore``, chosen once per app by ``store_for``: in
  this process (``MemoryClassStore``, the default) or in Valkey/Redis (``redis_store``,
  ``RedisClassStore``, when ``CNNLAB_REDIS_URL`` is set). Every change is an atomic
  ``update`` that wakes the class's event streams;
- ``access``: join codes, the assistant's secret, the views a class can be shown;
- ``questions``: quick questions, students' answers and their histogram;
- ``collection``, ``collection_store`` (``collection_redis``) and ``collect``: the class's
  own dataset (issue 15): its drawings, where they live, and the changes that wake the
  class's streams.

The routes are in app/routers/classroom.py and class_seats.py, the seats in app/seats.py.
"""

from cnnlab.app.classroom.access import (
    CODE_ALPHABET,
    CODE_LENGTH,
    MAX_VIEW_LENGTH,
    VIEW_PATHS,
    clean_view,
    code_ok,
    host_cookie,
    is_host,
    new_code,
    new_secret,
    normalise_code,
)
from cnnlab.app.classroom.questions import (
    HISTOGRAM_BARS,
    QUESTION_KINDS,
    format_value,
    histogram,
    make_question,
    next_value_question,
    output_size_question,
    param_count_question,
    parse_answer,
)
from cnnlab.app.classroom.collection import (
    DIGIT_LABELS,
    GRID,
    PHASES,
    BadGrid,
    Collection,
    Drawing,
    TestRecord,
    collection_from_json,
    collection_to_json,
    grid_bytes,
    next_label,
)
from cnnlab.app.classroom.collection_store import (
    CollectionStore,
    MemoryCollectionStore,
    NoCollection,
    collection_store_for,
)
from cnnlab.app.classroom.redis_store import RedisClassStore
from cnnlab.app.classroom.room import Question, Room, Student, room_from_json, room_to_json
from cnnlab.app.classroom.store import (
    ClassStore,
    MemoryClassStore,
    NoSuchClass,
    Subscription,
    store_for,
    update_class,
)

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "DIGIT_LABELS",
    "GRID",
    "HISTOGRAM_BARS",
    "MAX_VIEW_LENGTH",
    "PHASES",
    "QUESTION_KINDS",
    "VIEW_PATHS",
    "BadGrid",
    "ClassStore",
    "Collection",
    "CollectionStore",
    "Drawing",
    "MemoryClassStore",
    "MemoryCollectionStore",
    "NoCollection",
    "NoSuchClass",
    "Question",
    "RedisClassStore",
    "Room",
    "Student",
    "Subscription",
    "TestRecord",
    "clean_view",
    "code_ok",
    "collection_from_json",
    "collection_store_for",
    "collection_to_json",
    "format_value",
    "grid_bytes",
    "histogram",
    "host_cookie",
    "is_host",
    "make_question",
    "new_code",
    "new_secret",
    "next_label",
    "next_value_question",
    "normalise_code",
    "output_size_question",
    "param_count_question",
    "parse_answer",
    "room_from_json",
    "room_to_json",
    "store_for",
    "update_class",
]

