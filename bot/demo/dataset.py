"""The demo business: a two-plan SaaS with about forty customers, seeded relative to today.

Deterministic (a fixed random seed) so the demo reads the same every time and tests can rely on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from store import events as ev
from store.uow import EventStore

SEED = 20261121
PLANS = (("Starter", 4900), ("Team", 14900), ("Business", 39900))

# (person, company, domain) — a mix of company domains and free-mail users, some non-ASCII names.
PEOPLE = [
    ("Dana Whitfield", "Acme Logistics", "acme-logistics.com"),
    ("Mateo García", "Brisa Studio", "brisa.studio"),
    ("Priya Raman", "Copperleaf Analytics", "copperleaf.io"),
    ("Jonas Becker", "Nordlicht GmbH", "nordlicht.de"),
    ("Aiko Tanaka", "Kumo Design", "kumo.design"),
    ("Liam O'Connor", "Harbour & Co", "harbourco.ie"),
    ("Sofia Rossi", "Trattoria Digitale", "trattoriadigitale.it"),
    ("Noah Williams", None, "gmail.com"),
    ("Amélie Laurent", "Atelier Lumière", "atelier-lumiere.fr"),
    ("Kwame Mensah", "Sankofa Labs", "sankofalabs.com"),
    ("Elena Petrova", "Vostok Freight", "vostokfreight.com"),
    ("Chen Wei", "Jade Bridge Trading", "jadebridge.cn"),
    ("Olivia Brown", None, "outlook.com"),
    ("Lucas Silva", "Ipanema Surf Co", "ipanemasurf.com.br"),
    ("Hannah Schmidt", "Bergblick Hotels", "bergblick.at"),
    ("Omar Haddad", "Cedar Systems", "cedarsys.com"),
    ("Grace Kim", "Seoul Bytes", "seoulbytes.kr"),
    ("Ethan Clarke", "Clarke Consulting", "clarkeconsulting.co.uk"),
    ("Zoë Jansen", "Tulip Analytics", "tulipanalytics.nl"),
    ("Rafael Torres", "Andes Coffee Roasters", "andescoffee.com"),
    ("Maya Cohen", "Negev Solar", "negevsolar.com"),
    ("Samuel Okafor", "Lagos Ledger", "lagosledger.ng"),
    ("Isabella Martin", None, "icloud.com"),
    ("Felix Wagner", "Wagner Werkstatt", "wagner-werkstatt.de"),
    ("Chloé Dubois", "Dubois Patisserie", "duboispatisserie.fr"),
    ("Arjun Mehta", "Monsoon Apps", "monsoonapps.in"),
    ("Ingrid Larsen", "Fjord Outfitters", "fjordoutfitters.no"),
    ("Tom Becker", "Acme Logistics", "acme-logistics.com"),
    ("Lucía Fernández", "Sol y Sombra Events", "solysombra.es"),
    ("Ben Carter", "Carter Bikes", "carterbikes.com"),
    ("Yuki Sato", "Sakura Robotics", "sakurarobotics.jp"),
    ("Nora Lindqvist", "Midnight Sun Media", "midnightsun.se"),
    ("David Levi", "Olive Branch Legal", "olivebranchlegal.com"),
    ("Fatima Zahra", "Atlas Textiles", "atlastextiles.ma"),
    ("George Papadopoulos", "Aegean Charters", "aegeancharters.gr"),
    ("Emma Novak", "Prague Pixel", "praguepixel.cz"),
    ("Kai Müller", "Müller & Söhne", "mueller-soehne.de"),
    ("Ava Thompson", "Thompson Tutoring", "thompsontutoring.com"),
    ("Diego Ramírez", "Cactus Cloud", "cactuscloud.mx"),
    ("Lena Vogel", "Vogel Verlag", "vogelverlag.de"),
]

NOTES = [
    "Prefers email over calls; replies within a day.",
    "Asked about annual billing last quarter.",
    "Champion is the ops lead; the CFO signs renewals.",
    "Had an outage complaint in the spring; resolved with a credit.",
    "Interested in the API for their warehouse system.",
    "Small team, price sensitive.",
]

THREADS = [
    ("Question about exports", "Hi! Is there a way to export all our invoices as CSV? Thanks"),
    ("Re: onboarding", "Thanks for the walkthrough yesterday, the team is already using it."),
    ("Seats", "We are hiring two people next month, how do we add seats?"),
    ("Invoice", "Could you resend last month's invoice with our VAT number on it?"),
]


@dataclass(frozen=True)
class DemoCustomer:
    name: str
    company: str | None
    email: str
    stage: str
    plan: tuple[str, int] | None
    renews_on: date | None


def customers(today: date) -> list[DemoCustomer]:
    """The roster, with stages spread like a real small business's."""
    rng = random.Random(SEED)
    roster = []
    for index, (person, company, domain) in enumerate(PEOPLE):
        first = person.split()[0].lower().replace("é", "e").replace("ë", "e").replace("í", "i")
        email = f"{first}@{domain}" if company else f"{first}.{index}@{domain}"
        stage = ("customer", "customer", "customer", "trial", "lead", "qualified", "at_risk")[index % 7]
        plan = PLANS[rng.randrange(len(PLANS))] if stage in {"customer", "at_risk"} else None
        # A few renewals inside the nudge windows (7, 14, 30 days) so the demo has work to show.
        renews = today + timedelta(days=(6, 13, 29, 45, 80, 120)[index % 6]) if plan else None
        roster.append(DemoCustomer(person, company, email, stage, plan, renews))
    return roster


def seed(store: EventStore, now: datetime | None = None) -> int:
    """Write the demo business into an empty store; returns how many events were appended.

    Every event is keyed by `demo:…`, so seeding twice changes nothing.
    """
    now = now or datetime.now(UTC)
    today = now.date()
    rng = random.Random(SEED)
    with store.transaction() as tx:
        for index, person in enumerate(customers(today)):
            start = now - timedelta(days=400 - index * 7)
            ref = ev.CustomerRef(name=person.name, email=person.email, company=person.company)
            created = ev.CustomerCreated(
                name=person.name,
                company=person.company,
                stage=person.stage,
                notes=NOTES[index % len(NOTES)] if index % 3 == 0 else None,
            )
            key = f"demo:customer:{index}"
            customer_id = tx.resolve_customer(
                ref, key, occurred_at=start, source="demo", created=created, created_key=key
            )
            if person.plan:
                plan, cents = person.plan
                tx.record_signal(
                    "subscription.created",
                    ev.SubscriptionSignal(
                        customer=ref,
                        data={
                            "subscription_id": f"sub_demo_{index}",
                            "plan": plan,
                            "amount_cents": cents,
                            "renews_on": person.renews_on.isoformat() if person.renews_on else None,
                        },
                    ),
                    f"demo:subscription:{index}",
                    source="demo",
                    occurred_at=start + timedelta(days=1),
                )
                for month in range(3):
                    invoice_id = f"in_demo_{index}_{month}"
                    issued = now - timedelta(days=30 * (3 - month))
                    due = (issued + timedelta(days=14)).date()
                    tx.record_signal(
                        "invoice.created",
                        ev.InvoiceSignal(
                            customer=ref,
                            data={
                                "invoice_id": invoice_id,
                                "amount_cents": cents,
                                "due_date": due.isoformat(),
                            },
                        ),
                        f"demo:invoice:{invoice_id}",
                        source="demo",
                        occurred_at=issued,
                    )
                    # Most pay; every fifth customer leaves the latest invoice unpaid (overdue).
                    if not (month == 2 and index % 5 == 0):
                        tx.record_signal(
                            "invoice.paid",
                            ev.InvoiceSignal(
                                customer=ref, data={"invoice_id": invoice_id, "amount_cents": cents}
                            ),
                            f"demo:invoice_paid:{invoice_id}",
                            source="demo",
                            occurred_at=issued + timedelta(days=rng.randrange(1, 10)),
                        )
            if index % 4 == 1:
                # Past conversations are history, answered long ago: notes in the customer's record
                # (and memory), not messages waiting for a reply that would flood the first screen.
                subject, body = THREADS[index % len(THREADS)]
                ago = rng.randrange(2, 20)
                tx.append(
                    ev.NewEvent(
                        type="note.added",
                        payload=ev.NoteAdded(
                            text=f"Email “{subject}” ({ago} days ago): {body}", author="demo"
                        ),
                        stream=customer_id,
                        idempotency_key=f"demo:message:{index}",
                        source="demo",
                        occurred_at=now - timedelta(days=ago),
                    )
                )
        return len(tx.appended)


def story_renewal(today: date) -> str:
    """The subscription whose renewal opens the demo's morning: the first one a week away."""
    for index, person in enumerate(customers(today)):
        if person.renews_on is not None and (person.renews_on - today).days <= 7:
            return f"sub_demo_{index}"
    raise LookupError("the demo roster has no renewal within a week")


def story_overdue(today: date) -> str:
    """The overdue invoice of the demo's morning: the first customer's unpaid latest invoice."""
    renewal = story_renewal(today)
    for index, person in enumerate(customers(today)):
        # Every fifth paying customer left the latest invoice unpaid (`seed`); not the renewal's.
        if person.plan and index % 5 == 0 and f"sub_demo_{index}" != renewal:
            return f"in_demo_{index}_2"
    raise LookupError("the demo roster has no unpaid invoice")


# The scripted stream `crm demo` plays after seeding: one of each thing a solo operator's morning
# brings, in the order they show, after the renewal and the overdue invoice the scans find.
def incoming(now: datetime) -> list[tuple[str, str, dict]]:
    """(signal type, idempotency key, signal body) triples, in the order they arrive."""
    day = now.date().isoformat()

    def email(subject: str, message_id: str) -> dict[str, str]:
        return {"channel": "email", "subject": subject, "message_id": f"<{message_id}-{day}>"}

    return [
        (  # a hot lead: a founder asking for a demo and pricing, with a budget and a date
            "lead.created",
            f"demo:incoming:{day}:lead",
            {
                "customer": {
                    "name": "Rosa Delgado",
                    "email": "rosa@finca-verde.es",
                    "company": "Finca Verde",
                },
                "text": "Hi, I'm the founder of Finca Verde. We are 12 people and want a CRM this month: "
                "could we book a demo and get your pricing? Budget is approved.",
                "data": {"source": "demo_request", "company_size": 12, "title": "Founder", "budget": 6000},
            },
        ),
        (  # a complaint to escalate: the third failure, and a threat to dispute the charge
            "message.received",
            f"demo:incoming:{day}:complaint",
            {
                "customer": {"name": "Jonas Becker", "email": "jonas@nordlicht.de"},
                "text": "This is the third time this month the sync failed and we lost two days of orders. "
                "Fix it today, or I will dispute the charge with our bank.",
                "data": email("Sync failed again", "sync@nordlicht.de"),
            },
        ),
        (  # spam, filed with the reason and nothing sent
            "message.received",
            f"demo:incoming:{day}:spam",
            {
                "customer": {"email": "offers@growthhackers.example"},
                "text": "Congratulations!!! You have been selected for our exclusive SEO package. Our agency "
                "offers guaranteed first page on Google and 10,000 backlinks. Click here to claim your "
                "50% discount today only!",
                "data": email("Exclusive offer: first page on Google", "promo@growthhackers.example"),
            },
        ),
        (  # a question, answered with a drafted reply
            "message.received",
            f"demo:incoming:{day}:question",
            {
                "customer": {"name": "Mateo García", "email": "mateo@brisa.studio"},
                "text": "Hi! Quick question: how do I export all our invoices as a CSV file? Thanks, Mateo",
                "data": email("Exporting invoices", "export@brisa.studio"),
            },
        ),
        (  # and the rest of the morning: a buying signal, an out-of-office
            "message.received",
            f"demo:incoming:{day}:quote",
            {
                "customer": {"name": "Priya Raman", "email": "priya@copperleaf.io"},
                "text": "Hi, we love the product. Could we get a quote for 25 more seats on Business?",
                "data": email("Quote for more seats", "quote@copperleaf.io"),
            },
        ),
        (
            "message.received",
            f"demo:incoming:{day}:ooo",
            {
                "customer": {"email": "noreply@mailer.example"},
                "text": "I am out of the office until Monday with limited access to email.",
                "data": email("Automatic reply: your invoice", "ooo@mailer.example"),
            },
        ),
    ]
