"""Celery tasks of the chat app: they take ids, load rows through services, nothing more."""

import logging

from celery import Task, shared_task

from chat.services import chat_reply_abandon, chat_reply_generate

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_reply(self: Task, reply_id: int) -> None:
    """Generate the assistant reply with this id (in its session's order)."""
    try:
        wait = chat_reply_generate(reply_id=reply_id)
    except Exception:
        logger.exception("generating reply %s crashed", reply_id)
        chat_reply_abandon(reply_id=reply_id, reason="The assistant hit an internal error.")
        raise
    if wait is not None:
        raise self.retry(countdown=max(0.05, wait))
