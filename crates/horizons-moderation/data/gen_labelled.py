#!/usr/bin/env python3
"""Builds labelled.tsv: hand-written comments plus comments assembled from varied fragments.

Run from this folder: `python3 gen_labelled.py > labelled.tsv`. Deterministic (fixed seed), so
re-running it reproduces the committed file byte for byte. See README.md for what it contains.
"""
import random

rng = random.Random(20240611)

# ---------------------------------------------------------------- hand-written ham
HAM_HAND = [
    "Great image! What weighting did you use, Briggs robust 0.5 or natural?",
    "Is the measurement set for this field public yet or still proprietary?",
    "thanks, that fixed my flagging problem",
    "+1, same issue here with the C-configuration data",
    "Nice work. The jet on the eastern side looks much cleaner after self-cal.",
    "How long did the imaging take on your laptop? tclean keeps running out of memory for me.",
    "Which flux calibrator did you use, 3C286 or 3C147?",
    "I think the ring artefact is from an unflagged antenna, maybe ea12 on the second day.",
    "Could you share the script you used for the bandpass calibration?",
    "The HI cube is beautiful, you can see the warp in the outer disk clearly.",
    "agreed",
    "lol yes, the RFI at 1.6 GHz is always there, it's the Iridium satellites",
    "Does anyone know when the next ngVLA community call is?",
    "The proposal deadline for semester 2025B is 1 February, don't miss it.",
    "wow",
    "Is there a reason you used w-projection instead of w-stacking here?",
    "We saw the same pulsar scintillation in our Parkes data last year.",
    "Thanks for posting the calibration tables, saved me a day of work.",
    "I'm new to radio astronomy, what does uv coverage actually mean?",
    "The primary beam correction looks off at the edge of the field, maybe check the pbcor flag?",
    "Good question. The synthesized beam depends on the array configuration and the weighting.",
    "ngVLA will have roughly ten times the sensitivity of the current VLA at these frequencies.",
    "We got 6 hours of telescope time in B configuration, very excited!",
    "Can you post the dirty image as well so we can compare?",
    "Is 21 cm emission from the Milky Way visible with a 3 m dish? I want to try at home.",
    "Yes, with an RTL-SDR and a small horn antenna you can detect the hydrogen line.",
    "Source at the phase centre looks resolved, have you fitted a Gaussian to it?",
    "the data release notes say the pipeline version changed, so older images won't match exactly",
    "Lovely spectra. Is that a water maser at 22 GHz?",
    "I had the same error in CASA, upgrading to 6.6 fixed it.",
    "What is the rms noise in the final image? Looks like it's close to thermal.",
    "Any chance the FRB localisation will be published with the data?",
    "Thanks all, the discussion here was really helpful for my thesis chapter.",
    "nice",
    "Congrats on the paper!",
    "Just a note: the archive was down for maintenance this morning, it's back now.",
    "Anyone else seeing phase jumps on the long baselines around 03:00 UTC?",
    "The sidelobes are probably from the bright source just outside the primary beam.",
    "I'd try multi-term MFS with nterms=2 for that bandwidth.",
    "Is the ALMA data on this target at a comparable resolution?",
    "Where can I find the antenna positions file for the old D configuration?",
    "Great talk at the meeting yesterday, the slides are on the portal now.",
    "hmm, the spectral index map looks noisy at the edges, maybe mask below 5 sigma",
    "We should compare this with the LOFAR image at 150 MHz.",
    "How do you handle ionospheric effects at low frequencies?",
    "Does the portal keep older versions of the data release?",
    "Fantastic result, the polarisation vectors line up with the magnetic field nicely.",
    "What's the angular resolution in A configuration at L band?",
    "About 1.3 arcseconds, if I remember the table correctly.",
    "This is exactly the kind of thing the community portal is for, thanks for sharing.",
    "Here is the arXiv link for the paper: https://arxiv.org/abs/2301.01234",
    "The NRAO docs explain it well: https://science.nrao.edu/facilities/vla/docs",
    "Could a moderator move this thread to the calibration forum?",
    "I reported the broken link in the data release page, should be fixed soon.",
    "ok thanks",
    "The pulsar timing residuals look flat after adding the glitch term.",
    "Has anyone tried imaging the Sun with the VLA? The dynamic range must be crazy.",
    "cool, didn't know that",
    "That spike in the spectrum is a known birdie from the correlator, ignore it.",
    "My first fringe with our two-dish interferometer! Tiny baseline but it works.",
    "SO happy the proposal got accepted!!",
    "Note that the VLASS epoch 3 images have a different flux scale correction.",
    "I don't understand why the CLEAN residuals still show the source structure.",
    "Try lowering the gain and increasing niter, and use a mask around the source.",
    "The timing of this data release is perfect for my summer student project.",
    "Can we get the raw visibilities or only the calibrated images?",
    "Spam in the comments lately is annoying, glad the moderators are on it.",
    "The satellite constellations are making RFI much worse at our site.",
    "Is anyone going to the URSI meeting in Boulder this year?",
    "Beautiful mosaic. How many pointings was that?",
    "47 pointings, about 20 minutes each.",
    "Thanks! I'll check the weather table for that night too, maybe it was the wind.",
    "Does the portal support uploading FITS cubes larger than 2 GB?",
    "Great, works now",
    "Careful with the units, the map is in Jy/beam not Jy/pixel.",
    "Cool post. The galactic centre looks amazing at 6 cm.",
    "I wonder if the compact source is variable, do you have multiple epochs?",
    "Our group is hiring a postdoc in radio interferometry, details on the jobs page.",
    "The correlator setup had 64 spectral windows, it's a lot of data.",
    "So the short spacings are missing, that's why the extended emission is resolved out?",
    "Exactly, you'd need single-dish data or a more compact configuration to recover it.",
]

# ---------------------------------------------------------------- hand-written spam / abuse
SPAM_HAND = [
    "Make $5000 a week working from home!!! Click here http://easy-cash-now.biz",
    "BUY CHEAP VIAGRA ONLINE NO PRESCRIPTION www.pharma-deals.ru",
    "Bitcoin doubled my money in 3 days, contact Mr James on WhatsApp +1 202 555 0147",
    "you are an idiot and nobody wants to read your garbage posts",
    "FREE FREE FREE FREE FREE FREE click now",
    "THIS SITE IS A JOKE AND ALL OF YOU ARE CLOWNS",
    "Best SEO services, buy backlinks cheap, guaranteed first page on Google http://seo-rank-pro.net",
    "Hot singles in your area want to meet you tonight http://date-now.xyz",
    "Congratulations! You have won an iPhone 15. Claim your prize at http://prize-claim.top",
    "shut up moron, go back to your telescope and stay there",
    "Earn passive income with our crypto trading bot, 300% returns guaranteed, DM me",
    "Cheap cialis, tramadol, xanax - fast shipping worldwide - order now!",
    "I lost my bitcoin to a scam but a hacker recovered it for me, contact recoverypro on Telegram",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "lmaooooooooooooo what a loser",
    "Visit my casino site for 200 free spins http://lucky-spins-casino.win",
    "Need a loan fast? Bad credit OK, approval in 5 minutes, call 1-800-555-0199",
    "Get your essay written by experts, cheap and plagiarism free http://essay-writers.club",
    "nobody cares about your stupid radio waves, get a real job",
    "spam spam spam spam spam spam spam spam spam spam spam spam",
    "Great post! Also check out my forex signals group, 95% win rate http://t.me/forexkings",
    "Invest in the new token before it moons, presale ends tonight http://moonbag-token.io",
    "Work from home and earn $300 per day, no experience needed, message me on whatsapp",
    "You're pathetic. Delete your account.",
    "Buy Instagram followers and likes, 10000 followers for $9 http://insta-grow.shop",
    "WHY DOES NOBODY ANSWER MY QUESTIONS THIS PORTAL IS USELESS",
    "Click here click here click here click here click here",
    "Replica watches, Rolex, Omega, best price, http://replica-lux.cn",
    "Dear friend, I am a banker with $15 million dollars to transfer, kindly reply with your bank details",
    "Your account has been suspended, verify your password at http://portal-login-secure.com",
    "go die in a ditch you worthless troll",
    "Lose 20 kg in 2 weeks with this one weird trick http://slim-fast-pills.biz",
    "Telescope for sale cheap!!! also selling followers, crypto signals, loans http://multi-deals.xyz http://cheap-stuff.top",
    "Who else is making money with Elon's new crypto giveaway? Send 0.1 BTC and get 1 BTC back",
    "This is trash and you are trash",
    "Get paid to post comments! $25 per comment, sign up at http://paid-comments.online",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "LOL LOL LOL LOL LOL LOL LOL LOL",
    "I made $12,000 last month with binary options, ask me how, text +44 7700 900123",
    "Download free movies and software cracks at http://warez-zone.ru",
    "Stop posting, idiot. Your images are fake and so are you.",
    "Buy verified PayPal accounts and cloned cards, contact on ICQ",
    "Cheap web hosting and SEO backlinks package, only $19 http://hostseo.biz http://links4u.biz http://rank-me.biz",
    "Sexy girls live cams no signup http://cams-live.xxx",
    "Our keto gummies burn fat while you sleep, order today with 70% discount",
    "earn money online easy!!! join now http://bit.ly/3xYzAbC",
    "You people are all morons, this whole field is a scam funded by taxpayers",
    "Hello dear, I saw your profile and I want to be your friend, write to me at lovely.anna88@mail.ru",
    "NFT mint is live, only 100 left, connect your wallet now http://nft-drop.app",
    "OMG OMG OMG OMG OMG OMG OMG OMG OMG",
]

# ---------------------------------------------------------------- generated ham fragments
TOPICS = ["the HI cube", "this pulsar", "the FRB field", "the jet in M87", "Cas A", "Cygnus A",
          "the galactic centre", "the water maser", "the radio relic", "the lensed quasar",
          "the protoplanetary disk", "the supernova remnant", "this mosaic", "the deep field",
          "the spectral line cube", "the continuum image", "the polarisation map", "the OH megamaser",
          "the nearby spiral", "the cluster halo", "the transient", "the calibrator scan"]
INSTR = ["the VLA", "ngVLA", "MeerKAT", "ALMA", "LOFAR", "the GBT", "Parkes", "ASKAP", "FAST",
         "the VLBA", "our 3 m dish", "the SKA precursors", "uGMRT", "Effelsberg"]
BANDS = ["L band", "C band", "X band", "Ku band", "K band", "Ka band", "Q band", "P band", "S band"]
CONFIGS = ["A configuration", "B configuration", "C configuration", "D configuration",
           "the compact configuration", "the extended configuration"]
TOOLS = ["CASA", "tclean", "WSClean", "AIPS", "DDFacet", "the pipeline", "Miriad", "PyBDSF",
         "astropy", "the calibration script", "gaincal", "bandpass", "flagdata", "rflag", "tfcrop",
         "the imaging notebook"]
PROBLEMS = ["phase errors on the long baselines", "strong RFI around 1.5 GHz",
            "a stripe pattern across the image", "negative bowls around the source",
            "a flux scale that is 10% too high", "residual sidelobes", "a gap in the uv coverage",
            "bad data on one antenna", "amplitude jumps between scans", "a noisy first spectral window",
            "the beam looking elongated", "the model not converging", "memory errors while gridding",
            "the weather flagging too much data", "a wrong rest frequency in the header"]
HAM_TEMPLATES = [
    "How did you deal with {problem} in {topic}?",
    "I see {problem} when I image {topic} with {tool}. Any ideas?",
    "Did you observe {topic} with {instr} in {config}?",
    "What integration time did you need at {band} for {topic}?",
    "We had {problem} too, rerunning {tool} with a tighter mask helped a lot.",
    "Is {topic} visible to {instr} at {band}, or is it too faint?",
    "Really nice result on {topic}. Which version of {tool} did you use?",
    "Thanks for the tip about {tool}, it solved {problem} for me.",
    "Could the {problem} be caused by the calibrator being too far from {topic}?",
    "Our proposal for {topic} with {instr} got {hours} hours, fingers crossed for good weather.",
    "Has anyone compared {instr} and {instr2} data for {topic}?",
    "I think {problem} comes from {tool}, try the defaults first.",
    "The {band} data on {topic} looks great, the noise is about {num} microJy per beam.",
    "{instr} time in {config} is oversubscribed this semester, apply early if you want {band}.",
    "Quick question: does {tool} handle {problem} automatically?",
    "Following this thread, I'm also working on {topic}.",
    "For {topic} I would use {tool} and self-calibrate a couple of rounds.",
    "The data release for {topic} includes calibrated visibilities from {instr}, right?",
    "Nice! {topic} at {band} looks very different from the optical.",
    "We reduced the {instr} data for {topic} last week, happy to share notes.",
    "Is there a tutorial for {tool}? I keep getting {problem}.",
    "Was the {band} receiver working during the {config} run? I see {problem}.",
    "Just flagged {num} percent of the data because of {problem}, is that normal?",
    "My supervisor says {problem} is a known issue with {instr}, can anyone confirm?",
]
SHORT_HAM = ["thanks", "thank you!", "great post", "nice one", "interesting", "same here",
             "+1", "good point", "makes sense", "cheers", "agreed, good idea", "yes", "no, I don't think so",
             "oh nice", "following", "very cool", "amazing image", "thx", "ok", "will try that",
             "good luck with the proposal", "see you at the meeting", "congrats!", "well done",
             "haha true", "fair enough", "i see", "got it, thanks", "beautiful", "that's wild"]

# ---------------------------------------------------------------- generated spam fragments
DOMAINS = ["cash-fast", "best-deals", "crypto-profit", "pharma-online", "seo-boost", "win-big",
           "free-gift", "loan-approve", "followers-now", "hot-dates", "rich-quick", "pills4less",
           "bet-casino", "token-moon", "essay-pro", "promo-codes", "trade-signals", "slim-body"]
TLDS = [".biz", ".xyz", ".top", ".ru", ".win", ".club", ".online", ".shop", ".info", ".io", ".cn"]
PRODUCTS = ["viagra", "cialis", "weight loss pills", "keto gummies", "replica watches",
            "cheap followers", "Instagram likes", "backlinks", "SEO packages", "casino bonus",
            "forex signals", "crypto signals", "a payday loan", "essay writing", "bitcoin mining contracts",
            "an investment plan", "gift cards", "free spins", "male enhancement", "diet tea"]
MONEY = ["$500", "$1000", "$2,500", "$10k", "$300 a day", "5 BTC", "10x", "300%", "$9,000 a month"]
CONTACTS = ["WhatsApp +1 415 555 0132", "WhatsApp +234 803 555 1212", "Telegram @cryptoqueen",
            "telegram @fastprofits", "whatsapp +44 7911 123456", "call (555) 123-4567",
            "text 1-888-555-0101", "email richnow2024@mail.ru", "DM me", "inbox me",
            "wa.me/15551234567", "t.me/moneymaker"]
SPAM_TEMPLATES = [
    "Buy {product} now at {url} best prices guaranteed",
    "Earn {money} from home with {product}! {url}",
    "Cheap {product}, no prescription needed, visit {url}",
    "Want {money}? Contact {contact} today",
    "I made {money} with {product}, contact {contact} for details",
    "Limited offer: {product} 80% off, click {url}",
    "Great post! Check my {product} site {url}",
    "Amazing article, I also sell {product}, see {url} and {url2}",
    "Invest now and get {money} guaranteed returns, {contact}",
    "Best {product} provider, trusted by thousands, {url}",
    "{product} for sale {url} {url2} {url3}",
    "Hello, I recommend {product} to everyone, my life changed, {contact}",
    "Don't miss out on {product}!!! Order today at {url}",
    "Get {product} delivered discreetly, {contact}",
    "Earn {money} weekly, no experience required, register at {url}",
    "Your prize of {money} is waiting, claim it at {url}",
    "Recover your lost crypto with a certified hacker, {contact}",
    "Looking for {product}? We are the cheapest, {url}",
    "click here for {product} {url}",
    "Double your bitcoin in 24 hours, send to our wallet and receive {money}, {contact}",
]
INSULTS = ["idiot", "moron", "loser", "clown", "troll", "fool", "imbecile", "waste of space", "joke"]
ABUSE_TEMPLATES = [
    "you are a {insult}",
    "what a {insult}, delete this",
    "only a {insult} would post this",
    "shut up {insult}",
    "get lost, {insult}",
    "nobody asked you, {insult}",
    "you absolute {insult}, your data is fake",
    "typical {insult} comment, go away",
    "this author is a {insult} and a fraud",
    "stop wasting our time you {insult}",
]
SHOUTS = ["THIS IS A SCAM AND EVERYONE SHOULD KNOW IT", "WHY IS NOBODY FIXING THIS STUPID PORTAL",
          "DELETE THIS POST RIGHT NOW", "I HATE THIS SITE AND ALL ITS USERS",
          "STOP CENSORING ME YOU COWARDS", "READ MY PROFILE FOR FREE MONEY",
          "ALL OF YOU ARE LIARS AND FRAUDS", "GIVE ME MY ACCOUNT BACK NOW",
          "FAKE FAKE FAKE NOTHING HERE IS REAL", "WAKE UP PEOPLE THE MOON LANDING WAS FAKED"]
FLOOD_WORDS = ["buy", "free", "money", "click", "win", "crypto", "lol", "spam", "first", "bump", "hello"]


def typo(s: str) -> str:
    """Introduce one realistic typo: swap two letters, drop one, or lowercase and drop punctuation."""
    words = s.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    kind = rng.randrange(3)
    if kind == 0 and len(w) > 3:
        j = rng.randrange(len(w) - 1)
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == 1 and len(w) > 3:
        j = rng.randrange(len(w))
        w = w[:j] + w[j + 1:]
    else:
        return s.lower().replace("?", "").replace(".", "").replace(",", "")
    words[i] = w
    return " ".join(words)


def url() -> str:
    scheme = rng.choice(["http://", "https://", "www.", "http://www."])
    path = rng.choice(["", "/", "/offer", "/promo?id=" + str(rng.randrange(1000, 9999)), "/join", "/ref/abc"])
    return scheme + rng.choice(DOMAINS) + rng.choice(TLDS) + path


def gen_ham() -> str:
    if rng.random() < 0.12:
        return rng.choice(SHORT_HAM)
    i1, i2 = rng.sample(INSTR, 2)
    s = rng.choice(HAM_TEMPLATES).format(
        topic=rng.choice(TOPICS), instr=i1, instr2=i2, band=rng.choice(BANDS),
        config=rng.choice(CONFIGS), tool=rng.choice(TOOLS), problem=rng.choice(PROBLEMS),
        hours=rng.choice([2, 4, 6, 8, 12, 20]), num=rng.choice([3, 5, 8, 12, 15, 25, 40]))
    s = s[0].upper() + s[1:]
    if rng.random() < 0.15:
        s = typo(s)
    return s


def gen_spam() -> str:
    r = rng.random()
    if r < 0.6:
        s = rng.choice(SPAM_TEMPLATES).format(
            product=rng.choice(PRODUCTS), money=rng.choice(MONEY), contact=rng.choice(CONTACTS),
            url=url(), url2=url(), url3=url())
        if rng.random() < 0.15:
            s = s.upper()
    elif r < 0.8:
        s = rng.choice(ABUSE_TEMPLATES).format(insult=rng.choice(INSULTS))
        if rng.random() < 0.3:
            s = s.upper()
    elif r < 0.9:
        s = rng.choice(SHOUTS)
        if rng.random() < 0.5:
            s += "!" * rng.randrange(1, 8)
    else:
        w = rng.choice(FLOOD_WORDS)
        n = rng.randrange(6, 20)
        s = " ".join([w] * n)
        if rng.random() < 0.5:
            s = s.upper()
    return s[0].upper() + s[1:] if s else s


def main() -> None:
    seen = set()
    rows = []

    def add(label: str, text: str) -> None:
        text = text.replace("\t", " ").replace("\n", " ").strip()
        if text and text not in seen:
            seen.add(text)
            rows.append((label, text))

    for t in HAM_HAND:
        add("ham", t)
    for t in SPAM_HAND:
        add("spam", t)
    # Generated examples until each class has 260, skipping exact duplicates.
    while sum(1 for l, _ in rows if l == "ham") < 260:
        add("ham", gen_ham())
    while sum(1 for l, _ in rows if l == "spam") < 240:
        add("spam", gen_spam())
    rng.shuffle(rows)
    for label, text in rows:
        print(f"{label}\t{text}")


if __name__ == "__main__":
    main()
