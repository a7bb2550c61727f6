"""Celery tasks of chat rooms (registered through chat/tasks.py, which Celery discovers)."""

from celery import Task, shared_task

from chat.replies import reply_task_run
from chat.rooms.assistant import ROOM_REPLIES


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_room_reply(self: Task, reply_id: int) -> None:
    """Generate the room assistant's reply with this id (in its room's order)."""
    reply_task_run(self, ROOM_REPLIES, reply_id=reply_id)
