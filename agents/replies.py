"""Reply templates in the languages we support: greeting, sign-off, and the core sentence per purpose.

Used when no model drafts the reply (or the model is not allowed to). The greeting takes the person's
first name; with none, it is a plain greeting, never a company name.
"""

from __future__ import annotations

GREETING: dict[str, str] = {
    "en": "Hi {first_name},",
    "de": "Hallo {first_name},",
    "fr": "Bonjour {first_name},",
    "es": "Hola, {first_name}:",
    "it": "Ciao {first_name},",
    "pt": "Olá {first_name},",
    "nl": "Hoi {first_name},",
    "pl": "Dzień dobry, {first_name},",
}
GREETING_NO_NAME: dict[str, str] = {
    "en": "Hello,",
    "de": "Guten Tag,",
    "fr": "Bonjour,",
    "es": "Hola:",
    "it": "Buongiorno,",
    "pt": "Olá,",
    "nl": "Goedendag,",
    "pl": "Dzień dobry,",
}
SIGN_OFF: dict[str, str] = {
    "en": "Best regards",
    "de": "Viele Grüße",
    "fr": "Bien cordialement",
    "es": "Un saludo",
    "it": "Cordiali saluti",
    "pt": "Com os melhores cumprimentos",
    "nl": "Met vriendelijke groet",
    "pl": "Pozdrawiam",
}

# Core sentence per triage reply purpose and language.
REPLY_CORE: dict[str, dict[str, str]] = {
    "question": {
        "en": "Thanks for your question. I'm looking into it and will get back to you shortly.",
        "de": "Danke für Ihre Frage. Ich sehe mir das an und melde mich in Kürze bei Ihnen.",
        "fr": "Merci pour votre question. Je regarde cela et je reviens vers vous très vite.",
        "es": "Gracias por su pregunta. Lo estoy revisando y le respondo en breve.",
        "it": "Grazie per la domanda. Sto verificando e le rispondo a breve.",
        "pt": "Obrigado pela sua pergunta. Estou a verificar e respondo em breve.",
        "nl": "Bedankt voor uw vraag. Ik zoek het uit en kom er snel bij u op terug.",
        "pl": "Dziękuję za pytanie. Sprawdzam to i wkrótce odpowiem.",
    },
    "complaint": {
        "en": "I'm sorry about this, and thank you for telling me. I'm looking into it personally and will "
        "get back to you today.",
        "de": "Das tut mir leid, und danke, dass Sie mir Bescheid geben. Ich kümmere mich persönlich darum "
        "und melde mich heute noch.",
        "fr": "Je suis désolé pour ce problème et merci de me l'avoir signalé. Je m'en occupe "
        "personnellement et je reviens vers vous aujourd'hui.",
        "es": "Siento mucho lo ocurrido y gracias por avisarme. Me ocupo personalmente y le respondo "
        "hoy mismo.",
        "it": "Mi dispiace per l'accaduto e grazie per la segnalazione. Me ne occupo personalmente e le "
        "rispondo oggi stesso.",
        "pt": "Lamento o sucedido e obrigado por me avisar. Vou tratar disto pessoalmente e respondo "
        "ainda hoje.",
        "nl": "Vervelend dat dit gebeurd is, en bedankt dat u het meldt. Ik pak het persoonlijk op en laat "
        "vandaag nog van me horen.",
        "pl": "Przepraszam za tę sytuację i dziękuję za informację. Zajmę się tym osobiście i odezwę się "
        "jeszcze dziś.",
    },
    "cancellation_risk": {
        "en": "Thanks for letting me know. Before anything changes, could we have a quick call? I'd like to "
        "understand what isn't working and whether I can fix it.",
        "de": "Danke, dass Sie mir das sagen. Bevor sich etwas ändert: Hätten Sie Zeit für ein kurzes "
        "Gespräch? Ich möchte verstehen, was nicht passt, und ob ich es lösen kann.",
        "fr": "Merci de me prévenir. Avant tout changement, pourrions-nous en parler rapidement ? J'aimerais "
        "comprendre ce qui ne va pas et voir si je peux y remédier.",
        "es": "Gracias por avisarme. Antes de cambiar nada, ¿podríamos hablar un momento? Me gustaría "
        "entender qué no funciona y si puedo solucionarlo.",
        "it": "Grazie per avermelo detto. Prima di qualsiasi cambiamento, potremmo sentirci brevemente? "
        "Vorrei capire cosa non funziona e se posso risolverlo.",
        "pt": "Obrigado por avisar. Antes de mudar alguma coisa, podemos falar rapidamente? Gostaria de "
        "perceber o que não está a funcionar e se posso resolver.",
        "nl": "Bedankt dat u het laat weten. Kunnen we, voordat er iets verandert, even bellen? Ik wil graag "
        "begrijpen wat niet werkt en of ik het kan oplossen.",
        "pl": "Dziękuję za informację. Zanim cokolwiek się zmieni, czy możemy krótko porozmawiać? Chciałbym "
        "zrozumieć, co nie działa, i czy mogę to naprawić.",
    },
    "buying_signal": {
        "en": "Great to hear! I'll put the details together for you. When would suit you for a short call?",
        "de": "Das freut mich! Ich stelle Ihnen die Details zusammen. Wann passt Ihnen ein kurzes Gespräch?",
        "fr": "Ravi de l'apprendre ! Je vous prépare les détails. Quand seriez-vous disponible pour un court "
        "échange ?",
        "es": "¡Qué buena noticia! Le preparo los detalles. ¿Cuándo le vendría bien una llamada corta?",
        "it": "Ottima notizia! Le preparo i dettagli. Quando le andrebbe bene una breve chiamata?",
        "pt": "Ótima notícia! Vou preparar os detalhes. Quando lhe dá jeito uma chamada rápida?",
        "nl": "Goed om te horen! Ik zet de details voor u op een rij. Wanneer schikt een kort gesprek?",
        "pl": "Świetna wiadomość! Przygotuję szczegóły. Kiedy pasowałaby Panu/Pani krótka rozmowa?",
    },
    "billing_question": {
        "en": "Thanks for reaching out about billing. I'm checking your account and will come back to you "
        "with the details shortly.",
        "de": "Danke für Ihre Nachricht zur Abrechnung. Ich prüfe Ihr Konto und melde mich in Kürze mit den "
        "Details.",
        "fr": "Merci pour votre message concernant la facturation. Je vérifie votre compte et reviens vers "
        "vous rapidement avec les détails.",
        "es": "Gracias por escribirnos sobre la facturación. Estoy revisando su cuenta y le respondo en "
        "breve con los detalles.",
        "it": "Grazie per il messaggio sulla fatturazione. Sto controllando il suo account e le rispondo a "
        "breve con i dettagli.",
        "pt": "Obrigado pela mensagem sobre a faturação. Estou a verificar a sua conta e respondo em breve "
        "com os detalhes.",
        "nl": "Bedankt voor uw bericht over de facturatie. Ik controleer uw account en kom snel bij u terug "
        "met de details.",
        "pl": "Dziękuję za wiadomość w sprawie rozliczeń. Sprawdzam Państwa konto i wkrótce wrócę ze "
        "szczegółami.",
    },
    "injection": {
        "en": "Thanks for your message. I've received it and will get back to you personally.",
        "de": "Danke für Ihre Nachricht. Ich habe sie erhalten und melde mich persönlich bei Ihnen.",
        "fr": "Merci pour votre message. Je l'ai bien reçu et je reviendrai vers vous personnellement.",
        "es": "Gracias por su mensaje. Lo he recibido y le responderé personalmente.",
        "it": "Grazie per il messaggio. L'ho ricevuto e le risponderò personalmente.",
        "pt": "Obrigado pela sua mensagem. Recebi-a e responderei pessoalmente.",
        "nl": "Bedankt voor uw bericht. Ik heb het ontvangen en kom er persoonlijk op terug.",
        "pl": "Dziękuję za wiadomość. Otrzymałem ją i odpowiem osobiście.",
    },
}


def core(purpose: str, language: str) -> str:
    """The core sentence for a purpose in a language (English when there is no translation)."""
    by_language = REPLY_CORE[purpose]
    return by_language.get(language, by_language["en"])


def greeting(language: str, first_name: str) -> str:
    """The greeting line for a person, or the plain greeting when there is no first name."""
    if first_name:
        return GREETING.get(language, GREETING["en"]).format(first_name=first_name)
    return GREETING_NO_NAME.get(language, GREETING_NO_NAME["en"])


def sign_off(language: str) -> str:
    """The default sign-off in a language."""
    return SIGN_OFF.get(language, SIGN_OFF["en"])
