"""Celery tasks of the chat app: they take ids, load rows through services, nothing more."""

from celery import Task, shared_task

from chat.services import chat_reply_generate

UNEXPECTED_ERROR_RETRY_SECONDS = 10


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_reply(self: Task, reply_id: int) -> None:
    """Generate the assistant reply with this id (in its session's order)."""
    try:
        wait = chat_reply_generate(reply_id=reply_id)
    except Exception as exc:
        # A reply's own failures are settled inside the service; what reaches here is the
        # infrastructure (database, Redis) failing: try again once it may be back.
        raise self.retry(countdown=UNEXPECTED_ERROR_RETRY_SECONDS, exc=exc) from exc
    if wait is not None:
        raise self.retry(countdown=max(0.05, wait))
