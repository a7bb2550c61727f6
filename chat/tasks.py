"""Celery tasks of the chat app: they take ids, load rows through services, nothing more."""

import logging
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init, worker_ready

from chat.providers import offline_notice, provider_describe
from chat.replies import reply_task_run
from chat.rooms.tasks import generate_room_reply  # noqa: F401  (registers the room task)
from chat.services import CHAT_REPLIES


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_reply(self: Task, reply_id: int) -> None:
    """Generate the assistant reply with this id (in its session's order)."""
    reply_task_run(self, CHAT_REPLIES, reply_id=reply_id)


logger = logging.getLogger("chatsite.worker")


@worker_ready.connect
def announce_provider(**kwargs: Any) -> None:
    """Say at start-up which inference provider answers, and loudly if it is the stand-in."""
    notice = offline_notice()
    if notice:
        logger.warning(notice)
        return
    about = provider_describe()
    logger.info("inference provider: %s at %s, model %s", about["provider"], about["url"],
                about["model"] or "(the server's default)")  # fmt: skip


@worker_ready.connect
@worker_process_init.connect
def start_reply_supervisor(**kwargs: Any) -> None:
    """Start the reply supervisor in the worker (and in each prefork child, if any)."""
    from chat.supervisor import supervisor_start

    supervisor_start()
