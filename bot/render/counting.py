"""How each network counts a post: X's weighted length (twitter-text v3 `parseTweet`, its URL
extraction and TLD lists), Mastodon's length (links and mentions charged flat) and graphemes.

Pure: no network, no I/O. The X counter re-implements twitter-text v3 `parseTweet` instead of
calling `twitter-text-parser`, which matches the conformance vectors but imports `pkg_resources`
(gone from setuptools 82 and from bare Python 3.12+ venvs) and backtracks quadratically on dotted
runs such as `x.x.x…` (minutes for 10,000 characters). Same grammar here, linear time.
`bot.render.fit` fits posts with these counts and re-exports the public names.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import regex

from bot.render.x_emoji import VALID_EMOJI

URL_LENGTH = 23  # what X (t.co) and Mastodon charge for any link


# -- counting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class XConfig:
    """A twitter-text weighting config (`config/v2.json`, `config/v3.json` upstream)."""

    max_weighted_length: int = 280
    scale: int = 100
    default_weight: int = 200
    transformed_url_length: int = URL_LENGTH
    emoji_parsing: bool = True
    ranges: tuple[tuple[int, int, int], ...] = (
        (0x0000, 0x10FF, 100), (0x2000, 0x200D, 100), (0x2010, 0x201F, 100),
        (0x2032, 0x2037, 100),
    )


# v2 weighs an emoji per code point; v3 (what X uses today) counts each emoji its list knows as 2
# (`bot.render.x_emoji`), a newer sequence by its known parts and code points.
X_CONFIGS: dict[str, XConfig] = {"v2": XConfig(emoji_parsing=False), "v3": XConfig()}


@dataclass(frozen=True)
class XCount:
    """The parts of twitter-text's `parseTweet` result that decide whether X accepts a post."""

    weighted_length: int
    valid: bool
    permillage: int


_GRAPHEME = regex.compile(r"\X")
_INVALID_CHARS = frozenset("\uFFFE\uFEFF\uFFFF")


def x_parse(text: str, config: str | XConfig = "v3") -> XCount:
    """Weighted length and validity exactly as twitter-text's `parseTweet` computes them."""
    cfg = X_CONFIGS[config] if isinstance(config, str) else config
    text = unicodedata.normalize("NFC", text)
    urls = dict(_UrlScanner(text).extract())
    emoji = ({m.start(): m.end() for m in VALID_EMOJI.finditer(text)} if cfg.emoji_parsing
             else {})
    total, i, n = 0, 0, len(text)
    while i < n:
        if i in urls:
            total += cfg.transformed_url_length * cfg.scale
            i = urls[i]
        elif i in emoji:
            total += cfg.default_weight
            i = emoji[i]
        else:
            point = ord(text[i])
            total += next((w for lo, hi, w in cfg.ranges if lo <= point <= hi), cfg.default_weight)
            i += 1
    weighted = total // cfg.scale
    valid = 0 < weighted <= cfg.max_weighted_length and not _INVALID_CHARS.intersection(text)
    return XCount(weighted, valid, weighted * 1000 // cfg.max_weighted_length)


def x_weighted_length(text: str, config: str | XConfig = "v3") -> int:
    """X's weighted length: most scripts 1, CJK and emoji 2, any link 23 (twitter-text v3)."""
    return x_parse(text, config).weighted_length


def url_spans(text: str, *, bare: bool = False) -> list[tuple[int, int]]:
    """Where twitter-text finds links in `text` (character offsets); `bare` also finds
    domains written without `https://`."""
    return _UrlScanner(text).extract(without_protocol=bare)


def linked_part(url: str, network: str = "x") -> str:
    """What X (twitter-text) or Mastodon (twitter-text with its own path rules) links of
    `url` written between spaces: `url` itself when linked whole, else the part it links."""
    text = f" {unicodedata.normalize('NFC', url)} "
    scanner = (_UrlScanner(text, path=_M_PATH, query=_M_QUERY) if network == "mastodon"
               else _UrlScanner(text))
    spans = scanner.extract(without_protocol=network != "mastodon")
    return max((text[s:e] for s, e in spans if s == 1), key=len, default="")


def grapheme_length(text: str) -> int:
    """User-perceived characters: a ZWJ family or a flag is one, as Bluesky and Mastodon see it."""
    return sum(1 for _ in _GRAPHEME.finditer(text))


# Mastodon's Account::MENTION_RE (app/models/account.rb, AGPL-3.0): `@user` or `@user@domain`.
_MENTION = regex.compile(
    r"(?<![=/\w])@([a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)(?:@[\w.-]+\w+)?", regex.IGNORECASE)


def mastodon_length(text: str, url_length: int = URL_LENGTH) -> int:
    """Mastodon's StatusLengthValidator: graphemes, every link it links charged `url_length`,
    a mention `@user@domain` counted as `@user` (the domain is free)."""
    scanner = _UrlScanner(text, path=_M_PATH, query=_M_QUERY)
    entities = [(start, end, "x" * url_length)
                for start, end in scanner.extract(without_protocol=False)]
    entities += [(m.start(), m.end(), "@" + m.group(1)) for m in _MENTION.finditer(text)]
    parts, last = [], 0
    for start, end, replacement in sorted(entities):
        if start < last:
            continue  # overlapping entities: the earlier one wins, as Extractor does
        parts += [text[last:start], replacement]
        last = end
    return ruby_grapheme_length("".join([*parts, text[last:]]))


# Unicode 15.1 keeps an Indic conjunct (consonant + virama + consonant) in one grapheme
# (rule GB9c); Unicode 15.0, which Mastodon's Ruby 3.x uses, breaks after the virama.
_CONJUNCT_JOIN = regex.compile(
    r"(?<=\p{InCB=Consonant}[\p{InCB=Extend}\p{InCB=Linker}]*\p{InCB=Linker}"
    r"[\p{InCB=Extend}\p{InCB=Linker}]*)\p{InCB=Consonant}")


def ruby_grapheme_length(text: str) -> int:
    """Graphemes as Ruby 3.x counts them (Unicode 15.0): the 15.1 count plus one for every
    conjunct that 15.1 joins and 15.0 splits. Where the versions disagree this is the larger
    count, so a post fitted to it is never refused for being long."""
    joins = 0
    for match in _GRAPHEME.finditer(text):
        cluster = match.group()
        if len(cluster) > 2:
            joins += len(_CONJUNCT_JOIN.findall(cluster))
    return sum(1 for _ in _GRAPHEME.finditer(text)) + joins


def bluesky_length(text: str) -> tuple[int, int]:
    """(graphemes, UTF-8 bytes): Bluesky limits both and counts links in full."""
    return grapheme_length(text), len(text.encode("utf-8"))


# -- twitter-text URL extraction --------------------------------------------------------------
# Grammar of twitter-text's `extractUrlsWithIndices` (Apache-2.0, github.com/twitter/twitter-text):
# a preceding character, an optional http(s)://, a domain (labels, then a known TLD), port, path,
# query. The regex form re-scans the whole dotted run from every start; this memoises per label.

_PUNCT = frozenset("!'#%&()*+,\\-./:;<=>?@[]^_{|}~$")
_SPACES = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u180e\u2028\u2029\u202f\u205f\u3000"
                    + "".join(map(chr, range(0x2000, 0x200B))))
_DIRECTIONAL = frozenset("\u202a\u202b\u202c\u202d\u202e\u061c\u200e\u200f\u2066\u2067\u2068\u2069")
_NOT_DOMAIN = _PUNCT | _SPACES | _INVALID_CHARS | _DIRECTIONAL
_NOT_LABEL = _NOT_DOMAIN - {"-", "_"}
_NOT_BEFORE = _INVALID_CHARS | frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@＠$#＃")
_NOT_AFTER_TLD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@+-")
_MAX_URL_LENGTH = 4096
_MAX_TCO_SLUG = 40

_LATIN = (r"\xC0-\xD6\xD8-\xF6\xF8-\xFF\u0100-\u024F\u0253\u0254\u0256\u0257\u0259\u025B\u0263"
          r"\u0268\u026F\u0272\u0289\u028B\u02BB\u0300-\u036F\u1E00-\u1EFF")
_PATH_CHAR = rf"[a-z\u0400-\u04FF0-9!*';:=+,.$/%#\[\]\-\u2013_~@|&{_LATIN}]"
_PARENS = rf"\((?:{_PATH_CHAR}+|(?:{_PATH_CHAR}*\({_PATH_CHAR}+\){_PATH_CHAR}*))\)"
_PATH_END = rf"(?:[+\-a-z\u0400-\u04FF0-9=_#/{_LATIN}]|{_PARENS})"
_PATH = re.compile(
    rf"/(?:{_PATH_CHAR}*(?:{_PARENS}{_PATH_CHAR}*)*{_PATH_END}|@{_PATH_CHAR}+/)*",
    re.IGNORECASE | re.ASCII,
)
_QUERY_TAIL = r"(?:\?[a-z0-9!?*'@();:&=+$/%#\[\]\-_.,~|]*[a-z0-9\-_&=#/])?"
_QUERY = re.compile(_QUERY_TAIL, re.IGNORECASE | re.ASCII)
_PORT = re.compile(r":[0-9]+")
_PUNYCODE_TLD = re.compile(r"xn--[\-0-9a-z]+", re.IGNORECASE | re.ASCII)
_ASCII_LABEL = re.compile(rf"[\-a-z0-9{_LATIN}]+", re.IGNORECASE | re.ASCII)
_TCO = re.compile(rf"https?://t\.co/([a-z0-9]+){_QUERY_TAIL}", re.IGNORECASE | re.ASCII)

# Mastodon links with twitter-text too, but overrides its path and query rules (its
# config/initializers/twitter_regex.rb): a path may hold any character but space, `<>()?`; it
# may not end in `!*"'「」<>;:=,.$%[]~&|@`; a query may hold non-ASCII characters.
_M_CHAR = r"[^\s<>()?]"
_M_PARENS = rf"\((?:{_M_CHAR}+|{_M_CHAR}*\({_M_CHAR}+\){_M_CHAR}*)\)"
_M_END = rf"(?:[^\s()?!*\"'「」<>;:=,.$%\[\]~&|@]|{_M_PARENS})"
_M_PATH = re.compile(rf"/(?:{_M_CHAR}*(?:{_M_PARENS}{_M_CHAR}*)*{_M_END}|{_M_CHAR}+/)*",
                     re.IGNORECASE)
_M_WIDE = "\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef\U00010000-\U0010fffd"
_M_QUERY = re.compile(rf"(?:\?[a-z0-9!?*'();:&=+$/%#\[\]\-_.,~|@^{_M_WIDE}]*"
                      rf"[a-z0-9_&=#/\-{_M_WIDE}])?", re.IGNORECASE)


def _tld_end(text: str, start: int) -> int | None:
    """End of the TLD at `start` (first listed match wins, as in the regex alternation)."""
    if start >= len(text):
        return None
    for tld in _TLDS_BY_FIRST.get(text[start].lower(), ()):
        end = start + len(tld)
        if text[start:end].lower() == tld and (end == len(text) or
                                               text[end] not in _NOT_AFTER_TLD):
            return end
    match = _PUNYCODE_TLD.match(text, start)
    return match.end() if match else None


def _ascii_domains(domain: str) -> list[tuple[int, int]]:
    """ASCII-labelled domains inside `domain`: the only part of a bare `site.com` X links."""
    found, pos, n = [], 0, len(domain)
    while pos < n:
        label = _ASCII_LABEL.match(domain, pos)
        if not label:
            pos += 1
            continue
        best, reach = None, label.end()
        while label and label.end() < n and domain[label.end()] == ".":
            best = _tld_end(domain, label.end() + 1) or best
            label = _ASCII_LABEL.match(domain, label.end() + 1)
            reach = label.end() if label else reach
        if best:
            found.append((pos, best))
        pos = best or reach  # a failed start fails for every later start in the same run
    return found


def _idn_ok(domain: str, url: str, protocol: str) -> bool:
    """IDNA ToASCII must accept the host (as Java's `IDN.toASCII` in twitter-text's server-side
    twin does: label lengths, nameprep, bidi), and the punycoded URL stays within 4096."""
    try:
        ascii_domain = domain.encode("idna")
    except UnicodeError:
        return False
    return 0 < len(ascii_domain) and \
        len(protocol) + len(url) + len(ascii_domain) - len(domain) <= _MAX_URL_LENGTH


class _UrlScanner:
    """Finds the URLs twitter-text would find in one text, as (start, end) code point spans."""

    def __init__(self, text: str, *, path: re.Pattern[str] = _PATH,
                 query: re.Pattern[str] = _QUERY) -> None:
        self.text = text
        self.path, self.query = path, query
        n = len(text)
        label = [c not in _NOT_LABEL for c in text]
        self.run_end = list(range(n + 1))  # end of the run of label characters from i
        self.next_underscore = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            if label[i]:
                self.run_end[i] = self.run_end[i + 1] if i + 1 < n and label[i + 1] else i + 1
            self.next_underscore[i] = i if text[i] == "_" else self.next_underscore[i + 1]
        self.domains: dict[int, int | None] = {}

    def _label(self, start: int) -> int | None:
        """End of a subdomain label (`a-b_c.`) at `start`, or None."""
        text, end = self.text, self.run_end[start]
        if end > start and end < len(text) and text[end] == "." \
                and text[start] not in _NOT_DOMAIN and text[end - 1] not in _NOT_DOMAIN:
            return end
        return None

    def domain_end(self, start: int) -> int | None:
        """End of the longest `label.….label.tld` at `start`: the regex's greedy choice."""
        chain, pos = [], start
        while pos not in self.domains:
            end = self._label(pos)
            if end is None:
                self.domains[pos] = None
                break
            chain.append((pos, end))
            pos = end + 1
        best = self.domains[pos]
        for label_start, end in reversed(chain):
            if best is None and self.next_underscore[label_start] >= end:  # no `_` before TLD
                best = _tld_end(self.text, end + 1)
            self.domains[label_start] = best
        return best

    def _match(self, start: int) -> tuple[int, int, bool, int] | None:
        """(domain start, domain end, has a path, url end) for a URL at `start`, or None."""
        head = self.text[start:start + 8].lower()
        protocol = 8 if head.startswith("https://") else 7 if head.startswith("http://") else 0
        for domain_start in dict.fromkeys((start + protocol, start)):
            domain_end = self.domain_end(domain_start)
            if domain_end is not None:
                break
        else:
            return None
        end = domain_end
        has_path = False
        for part in (_PORT, self.path, self.query):
            match = part.match(self.text, end)
            if match:
                has_path = has_path or part is self.path
                end = match.end()
        return domain_start, domain_end, has_path, end

    def extract(self, without_protocol: bool = True) -> list[tuple[int, int]]:
        text = self.text
        if not text or ("." if without_protocol else ":") not in text:
            return []
        urls: list[tuple[int, int]] = []
        pos = 0
        while pos < len(text):
            starts = [] if text[pos] in _NOT_BEFORE else [pos + 1]
            if pos == 0:
                starts.append(0)
            for start in starts:
                found = self._match(start)
                if found:
                    break
            else:
                pos += 1
                continue
            domain_start, domain_end, has_path, end = found
            pos = end  # the regex resumes after its match even when the URL is rejected
            url, domain = text[start:end], text[domain_start:domain_end]
            protocol = text[start:domain_start]
            if not _idn_ok(domain, url, protocol or "https://"):
                continue
            if protocol:
                tco = _TCO.match(url)
                if tco and len(tco.group(1)) > _MAX_TCO_SLUG:
                    continue
                urls.append((start, start + tco.end() if tco else end))
                continue
            before = text[start - 1] if start else ""
            if not without_protocol or (before and before in "-_./"):
                continue
            bare = [(start + s, start + e) for s, e in _ascii_domains(domain)]
            if bare and has_path:  # the path (and query) goes with the last domain
                bare[-1] = (bare[-1][0], end)
            urls.extend(bare)
        return urls


# -- data: twitter-text's TLD lists (gTLDs first: the regex tries them first) -----------------

_TLDS = "\n".join([
    "삼성 닷컴 닷넷 香格里拉 餐厅 食品 飞利浦 電訊盈科 集团 通販 购物 谷歌 诺基亚 联通 网络",
    "网站 网店 网址 组织机构 移动 珠宝 点看 游戏 淡马锡 机构 書籍 时尚 新闻 政府 政务 招聘",
    "手表 手机 我爱你 慈善 微博 广东 工行 家電 娱乐 天主教 大拿 大众汽车 在线 嘉里大酒店 嘉里",
    "商标 商店 商城 公益 公司 八卦 健康 信息 佛山 企业 中文网 中信 世界 ポイント ファッション",
    "セール ストア コム グーグル クラウド みんな คอม संगठन नेट कॉम همراه موقع موبايلي كوم",
    "كاثوليك عرب شبكة بيتك بازار العليان ارامكو اتصالات ابوظبي קום сайт рус орг онлайн москва",
    "ком католик дети zuerich zone zippo zip zero zara zappos yun youtube you yokohama yoga",
    "yodobashi yandex yamaxun yahoo yachts xyz xxx xperia xin xihuan xfinity xerox xbox wtf",
    "wtc wow world works work woodside wolterskluwer wme winners wine windows win williamhill",
    "wiki wien whoswho weir weibo wedding wed website weber webcam weatherchannel weather",
    "watches watch warman wanggou wang walter walmart wales vuelos voyage voto voting vote",
    "volvo volkswagen vodka vlaanderen vivo viva vistaprint vista vision visa virgin vip vin",
    "villas viking vig video viajes vet versicherung vermögensberatung vermögensberater",
    "verisign ventures vegas vanguard vana vacations ups uol uno university unicom uconnect",
    "ubs ubank tvs tushu tunes tui tube trv trust travelersinsurance travelers travelchannel",
    "travel training trading trade toys toyota town tours total toshiba toray top tools tokyo",
    "today tmall tkmaxx tjx tjmaxx tirol tires tips tiffany tienda tickets tiaa theatre",
    "theater thd teva tennis temasek telefonica telecity tel technology tech team tdk tci",
    "taxi tax tattoo tatar tatamotors target taobao talk taipei tab systems symantec sydney",
    "swiss swiftcover swatch suzuki surgery surf support supply supplies sucks style study",
    "studio stream store storage stockholm stcgroup stc statoil statefarm statebank starhub",
    "star staples stada srt srl spreadbetting spot sport spiegel space soy sony song",
    "solutions solar sohu software softbank social soccer sncf smile smart sling skype sky",
    "skin ski site singles sina silk shriram showtime show shouji shopping shop shoes shiksha",
    "shia shell shaw sharp shangrila sfr sexy sex sew seven ses services sener select seek",
    "security secure seat search scot scor scjohnson science schwarz schule school",
    "scholarships schmidt schaeffler scb sca sbs sbi saxo save sas sarl sapo sap sanofi",
    "sandvikcoromant sandvik samsung samsclub salon sale sakura safety safe saarland ryukyu",
    "rwe run ruhr rugby rsvp room rogers rodeo rocks rocher rmit rip rio ril rightathome",
    "ricoh richardli rich rexroth reviews review restaurant rest republican report repair",
    "rentals rent ren reliance reit reisen reise rehab redumbrella redstone red recipes",
    "realty realtor realestate read raid radio racing qvc quest quebec qpon pwc pub",
    "prudential pru protection property properties promo progressive prof productions prod",
    "pro prime press praxi pramerica post porn politie poker pohl pnc plus plumbing",
    "playstation play place pizza pioneer pink ping pin pid pictures pictet pics piaget",
    "physio photos photography photo phone philips phd pharmacy pfizer pet pccw pay passagens",
    "party parts partners pars paris panerai panasonic pamperedchef page ovh ott otsuka osaka",
    "origins orientexpress organic org orange oracle open ooo onyourside online onl ong one",
    "omega ollo oldnavy olayangroup olayan okinawa office off observer obi nyc ntt nrw nra",
    "nowtv nowruz now norton northwesternmutual nokia nissay nissan ninja nikon nike nico nhk",
    "ngo nfl nexus nextdirect next news newholland new neustar network netflix netbank net",
    "nec nba navy natura nationwide name nagoya nadex nab mutuelle mutual museum mtr mtpc mtn",
    "msd movistar movie mov motorcycles moto moscow mortgage mormon mopar montblanc monster",
    "money monash mom moi moe moda mobily mobile mobi mma mls mlb mitsubishi mit mint mini",
    "mil microsoft miami metlife merckmsd meo menu men memorial meme melbourne meet media med",
    "mckinsey mcdonalds mcd mba mattel maserati marshalls marriott markets marketing market",
    "map mango management man makeup maison maif madrid macys luxury luxe lupin lundbeck ltda",
    "ltd lplfinancial lpl love lotto lotte london lol loft locus locker loans loan llp llc",
    "lixil living live lipsy link linde lincoln limo limited lilly like lighting lifestyle",
    "lifeinsurance life lidl liaison lgbt lexus lego legal lefrak leclerc lease lds lawyer",
    "law latrobe latino lat lasalle lanxess landrover land lancome lancia lancaster lamer",
    "lamborghini ladbrokes lacaixa kyoto kuokgroup kred krd kpn kpmg kosher komatsu koeln",
    "kiwi kitchen kindle kinder kim kia kfh kerryproperties kerrylogistics kerryhotels kddi",
    "kaufen juniper juegos jprs jpmorgan joy jot joburg jobs jnj jmp jll jlc jio jewelry",
    "jetzt jeep jcp jcb java jaguar iwc iveco itv itau istanbul ist ismaili iselect irish",
    "ipiranga investments intuit international intel int insure insurance institute ink ing",
    "info infiniti industries inc immobilien immo imdb imamat ikano iinet ifm ieee icu ice",
    "icbc ibm hyundai hyatt hughes htc hsbc how house hotmail hotels hoteles hot hosting host",
    "hospital horse honeywell honda homesense homes homegoods homedepot holiday holdings",
    "hockey hkt hiv hitachi hisamitsu hiphop hgtv hermes here helsinki help healthcare health",
    "hdfcbank hdfc hbo haus hangout hamburg hair guru guitars guide guge gucci guardian group",
    "grocery gripe green gratis graphics grainger gov got gop google goog goodyear goodhands",
    "goo golf goldpoint gold godaddy gmx gmo gmbh gmail globo global gle glass glade giving",
    "gives gifts gift ggee george genting gent gea gdn gbiz gay garden gap games game gallup",
    "gallo gallery gal fyi futbol furniture fund fun fujixerox fujitsu ftr frontier frontdoor",
    "frogans frl fresenius free fox foundation forum forsale forex ford football foodnetwork",
    "food foo fly flsmidth flowers florist flir flights flickr fitness fit fishing fish",
    "firmdale firestone fire financial finance final film fido fidelity fiat ferrero ferrari",
    "feedback fedex fast fashion farmers farm fans fan family faith fairwinds fail fage",
    "extraspace express exposed expert exchange everbank events eus eurovision etisalat",
    "esurance estate esq erni ericsson equipment epson epost enterprises engineering engineer",
    "energy emerck email education edu edeka eco eat earth dvr dvag durban dupont duns dunlop",
    "duck dubai dtv drive download dot doosan domains doha dog dodge doctor docs dnp diy dish",
    "discover discount directory direct digital diet diamonds dhl dev design desi dentist",
    "dental democrat delta deloitte dell delivery degree deals dealer deal dds dclk day",
    "datsun dating date data dance dad dabur cyou cymru cuisinella csc cruises cruise crs",
    "crown cricket creditunion creditcard credit cpa courses coupons coupon country corsica",
    "coop cool cookingchannel cooking contractors contact consulting construction condos",
    "comsec computer compare company community commbank comcast com cologne college coffee",
    "codes coach clubmed club cloud clothing clinique clinic click cleaning claims cityeats",
    "city citic citi citadel cisco circle cipriani church chrysler chrome christmas chloe",
    "chintai cheap chat chase charity channel chanel cfd cfa cern ceo center ceb cbs cbre cbn",
    "cba catholic catering cat casino cash caseih case casa cartier cars careers career care",
    "cards caravan car capitalone capital capetown canon cancerresearch camp camera cam",
    "calvinklein call cal cafe cab bzh buzz buy business builders build bugatti budapest",
    "brussels brother broker broadway bridgestone bradesco box boutique bot boston bostik",
    "bosch boots booking book boo bond bom bofa boehringer boats bnpparibas bnl bmw bms blue",
    "bloomberg blog blockbuster blanco blackfriday black biz bio bingo bing bike bid bible",
    "bharti bet bestbuy best berlin bentley beer beauty beats bcn bcg bbva bbt bbc bayern",
    "bauhaus basketball baseball bargains barefoot barclays barclaycard barcelona bar bank",
    "band bananarepublic banamex baidu baby azure axa aws avianca autos auto author auspost",
    "audio audible audi auction attorney athleta associates asia asda arte art arpa army",
    "archi aramco arab aquarelle apple app apartments aol anz anquan android analytics",
    "amsterdam amica amfam amex americanfamily americanexpress alstom alsace ally allstate",
    "allfinanz alipay alibaba alfaromeo akdn airtel airforce airbus aigo aig agency agakhan",
    "africa afl afamilycompany aetna aero aeg adult ads adac actor active aco accountants",
    "accountant accenture academy abudhabi abogado able abc abbvie abbott abb abarth aarp aaa",
    "onion 한국 香港 澳門 新加坡 台灣 台湾 中國 中国 გე ລາວ ไทย ලංකා ഭാരതം ಭಾರತ భారత్ சிங்கப்பூர்",
    "இலங்கை இந்தியா ଭାରତ ભારત ਭਾਰਤ ভাৰত ভারত বাংলা भारोत भारतम् भारत ڀارت پاکستان موريتانيا",
    "مليسيا مصر قطر فلسطين عمان عراق سورية سودان تونس بھارت بارت ایران امارات المغرب السعودية",
    "الجزائر البحرين الاردن հայ қаз укр срб рф мон мкд ею бел бг ευ ελ zw zm za yt ye ws wf",
    "vu vn vi vg ve vc va uz uy us um uk ug ua tz tw tv tt tr tp to tn tm tl tk tj th tg tf",
    "td tc sz sy sx sv su st ss sr so sn sm sl sk sj si sh sg se sd sc sb sa rw ru rs ro re",
    "qa py pw pt ps pr pn pm pl pk ph pg pf pe pa om nz nu nr np no nl ni ng nf ne nc na mz",
    "my mx mw mv mu mt ms mr mq mp mo mn mm ml mk mh mg mf me md mc ma ly lv lu lt ls lr lk",
    "li lc lb la kz ky kw kr kp kn km ki kh kg ke jp jo jm je it is ir iq io in im il ie id",
    "hu ht hr hn hm hk gy gw gu gt gs gr gq gp gn gm gl gi gh gg gf ge gd gb ga fr fo fm fk",
    "fj fi eu et es er eh eg ee ec dz do dm dk dj de cz cy cx cw cv cu cr co cn cm cl ck ci",
    "ch cg cf cd cc ca bz by bw bv bt bs br bq bo bn bm bl bj bi bh bg bf be bd bb ba az ax",
    "aw au at as ar aq ao an am al ai ag af ae ad ac",
])
_TLDS_BY_FIRST: dict[str, list[str]] = {}
for _tld in _TLDS.split():
    _TLDS_BY_FIRST.setdefault(_tld[0], []).append(_tld)
del _tld
